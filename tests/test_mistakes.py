"""What a user types wrong: unknown keys, Hydra-level mistakes and runs too big to fit."""
from __future__ import annotations

import pytest

from gdexp import config
from gdexp.config import ConfigError

from .conftest import compose_config, run_cli


@pytest.mark.parametrize("override, message", [
    ("+stop.max_step=10", r"^stop\.max_step: unknown key; did you mean stop\.max_steps\? "),
    ("+tracking.experimnt=x", r"^tracking\.experimnt: unknown key; did you mean "
                              r"tracking\.experiment\? "),
    ("+unknown=1", r"^unknown: unknown key \(allowed at the top level: "),
    ("+max_steps=3", r"^max_steps: unknown key; did you mean stop\.max_steps\? "),
])
def test_unknown_keys_are_refused_with_the_closest_key(override, message):
    with pytest.raises(ConfigError, match=message):
        config.build(compose_config(override))


def test_line_search_typo_names_the_armijo_key():
    with pytest.raises(ConfigError, match=r"^line_search\.cc: unknown key; did you mean "
                                          r"line_search\.c\? \(allowed in line_search "
                                          r"'armijo': c, max_iter, name, shrink\)$"):
        config.build(compose_config("line_search=armijo", "+line_search.cc=0.1"))


def test_a_run_too_big_is_refused_before_anything_is_allocated():
    with pytest.raises(ConfigError, match=r"^memory_limit: this run needs about .* more than "
                                          r"the limit of 1 GB \(memory_limit\); lower "
                                          r"init\.n_starts"):
        config.build(compose_config("init.n_starts=1000000000", "memory_limit=1"))
    with pytest.raises(ConfigError, match=r"lower objective\.dim"):
        config.build(compose_config("objective.dim=100000"))


@pytest.mark.parametrize("args, start", [
    (["objective=rosenbruck"], "gdexp: error: objective: expected one of beale, "),
    (["unknown_key=1"], "gdexp: error: unknown_key: unknown key "),
    (["optimizer.lr=[1,2"], "gdexp: error: optimizer.lr=[1,2: expected an override KEY=VALUE"),
    (["-m", "optimizer=adamw,gd", "tracking=off"], "gdexp: error: optimizer: expected one of "),
    # out of the range an objective's parameter means anything in float64
    (["objective=rosenbrock", "objective.b=1e308"],
     "gdexp: error: objective 'rosenbrock': b must be a number in (0, 1e8], got 1e+308"),
])
def test_hydra_mistakes_give_one_line_and_exit_2(args, start, outputs):
    proc = run_cli("run", *args, outputs=outputs)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), proc.stderr


@pytest.mark.parametrize("args", [["optimizer.lr=-1"], ["-m", "optimizer.lr=0.1,-1"],
                                  ["-m", "hydra/launcher=basic", "optimizer.lr=0.1,-1"]])
def test_a_refused_run_or_sweep_leaves_no_folder(args, outputs, tmp_path):
    """What Hydra wrote before the refusal (.hydra, the job's log, multirun.yaml) goes with
    it; a folder that was there before stays, with what it held."""
    (outputs / "kept").mkdir(parents=True)
    (outputs / "kept" / "notes.txt").write_text("mine")
    proc = run_cli("run", *args, outputs=outputs)
    assert proc.returncode == 2, proc.stderr
    assert sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*")) == \
        ["kept", "kept/notes.txt"]
    # into a folder named by the user that exists: Hydra's files stay, so does the rest
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    key = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
    proc = run_cli("run", *args, f"{key}={mine}", outputs=outputs)
    assert proc.returncode == 2, proc.stderr
    assert (mine / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_rate_that_is_no_finite_number_is_called_so(value):
    with pytest.raises(ConfigError, match=rf"^optimizer\.lr: expected a finite number > 0, "
                                          rf"got {value}$"):
        config.build(compose_config(f"optimizer.lr={value}"))
