"""What a new user meets first: report defaults, tables, names, console lines, completion, defaults."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gdexp import config, pipeline
from gdexp.paths import CONF_DIR

from .conftest import compose_config, run_cli

FAST = ("stop.max_steps=60", "tracking.plots=false", "diagnostics.enabled=false")


def written_dir(stdout: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith("wrote "))
    return Path(line[len("wrote "):].split(": ")[0])


def rows_of(stdout: str) -> list[dict]:
    with open(written_dir(stdout) / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_report_without_argument_reports_the_latest_sweep_of_the_whole_store(outputs):
    # a preset logs into its own experiment, as experiment=lr_regimes does
    run_cli("run", "-m", "optimizer.lr=0.05,0.1", "tracking.experiment=elsewhere", *FAST,
            outputs=outputs, check=True)
    proc = run_cli("report", outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    assert "elsewhere" in proc.stdout
    assert sorted(r["optimizer.lr"] for r in rows_of(proc.stdout)) == ["0.05", "0.1"]


def test_repeated_and_skip_finished_sweeps_report_one_row_per_config(outputs):
    for _ in range(2):
        run_cli("run", "-m", "optimizer.lr=0.05,0.1", *FAST, outputs=outputs, check=True)
    proc = run_cli("report", "gdexp", outputs=outputs)  # the experiment: both sweeps
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["optimizer.lr"] for r in rows_of(proc.stdout)) == ["0.05", "0.1"]
    assert "2 earlier runs of the same configs left out" in proc.stdout
    # a skip_finished sweep reuses two finished runs and runs one: all three are its results
    run_cli("run", "-m", "optimizer.lr=0.05,0.1,0.2", "tracking.skip_finished=true", *FAST,
            outputs=outputs, check=True)
    proc = run_cli("report", outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["optimizer.lr"] for r in rows_of(proc.stdout)) == ["0.05", "0.1", "0.2"]


def test_starts_table_and_messages_write_plain_numbers(outputs):
    proc = run_cli("run", "init=uniform", "init.n_starts=3", "tracking.enabled=false", *FAST,
                   outputs=outputs, check=True)
    tables = list((outputs / "runs").rglob("starts.csv"))
    assert len(tables) == 1, proc.stdout
    text = tables[0].read_text()
    assert "np." not in text and "float64" not in text
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 3 and all(float(v) == float(v) for r in rows for k, v in r.items()
                                  if k.startswith("x") and v)
    bad = run_cli("run", "init=uniform", "init.low=1.0", "init.high=0.5", outputs=outputs)
    assert bad.returncode == 2 and "np.float64" not in bad.stderr, bad.stderr


def test_run_names_say_what_sets_a_run_apart():
    def name(*overrides):
        cfg = compose_config(*overrides)
        return pipeline.run_name(cfg, config.build(cfg))

    assert name("objective=quadratic_ill").startswith("quadratic_ill-gd-")
    assert name("objective=rosenbrock", "objective.dim=4").startswith("rosenbrock-d4-gd-")
    assert "-cosine-" in name("schedule=cosine", "schedule.decay_steps=100")
    assert "-armijo-" in name("line_search=armijo")
    # an optimizer's settings changed from its option file (a momentum or beta sweep)
    assert name("optimizer=momentum").startswith("quadratic-momentum-lr")
    assert name("optimizer=momentum", "optimizer.momentum=0.5",
                "optimizer.weight_decay=0.01").startswith("quadratic-momentum-mu0.5-wd0.01-lr")
    assert name("optimizer=adam", "optimizer.beta1=0.8", "optimizer.amsgrad=true").startswith(
        "quadratic-adam-beta1_0.8-amsgrad-lr")
    assert name("objective=least_squares", "data=diabetes", "data.batch_size=32").startswith(
        "least_squares-diabetes-gd-") and "-b32-" in name(
        "objective=least_squares", "data=diabetes", "data.batch_size=32")
    assert pipeline.reproduction_name("quadratic-gd-lr0.1-s0", "0123456789abcdef" * 2) == \
        "quadratic-gd-lr0.1-s0-repro-01234567"
    # from a folder: a run's, or a sweep's job (numbered within its sweep's folder)
    assert pipeline.reproduction_name("q", "/o/runs/2026-12-04/02-34-39-044177") == \
        "q-repro-02-34-39-044177"
    assert pipeline.reproduction_name("q", "/o/sweeps/2026-12-04/02-15-01-175044/4") == \
        "q-repro-02-15-01-175044-4"


def test_a_sweep_prints_one_line_per_job_and_a_rate_axis_one_line_per_rate(outputs):
    proc = run_cli("run", "-m", "optimizer.lr=0.05,0.1,0.25", "stop.max_steps=300", *FAST[1:],
                   outputs=outputs, check=True)
    jobs = re.findall(r"^job (\d)/3  quadratic-gd-lr\S+: (.*)  \[run [0-9a-f]{8}\]$",
                      proc.stdout, re.M)
    assert sorted(k for k, _ in jobs) == ["1", "2", "3"], proc.stdout
    assert not re.search(r"^#\d+ :", proc.stdout + proc.stderr, re.M)  # Hydra's own job lines
    assert "Creating initial MLflow database tables" not in proc.stdout + proc.stderr
    words = {what for _, what in jobs}
    assert any(w.startswith("diverged at step") for w in words)
    assert not any("(max_steps) after" in w for w in words)
    # a rate axis in one run: what each rate did
    one = run_cli("run", "optimizer.lr=[0.05,0.25]", "stop.max_steps=300", *FAST[1:],
                  outputs=outputs, check=True)
    assert re.search(r"^  lr=0.05: converged after \d+ steps", one.stdout, re.M), one.stdout
    assert re.search(r"^  lr=0.25: diverged at step \d+", one.stdout, re.M), one.stdout


def test_a_run_that_used_up_its_budget_does_not_claim_a_minimum():
    cfg = compose_config("objective=rosenbrock", "stop.max_steps=10", "tracking.enabled=false")
    plan = config.build(cfg)
    result = pipeline._descend(plan)
    text = pipeline.describe("r", plan.objective, result)
    assert "step budget used up after 10 steps, not converged" in text
    assert "at the global minimum" not in text


def test_a_start_that_converged_off_the_listed_minima_is_named_by_its_hessian():
    """On ¼x⁴ − ½x² + ½y² a start on x = 0 converges to the saddle (0, 0), Hessian
    diag(−1, 1); the result line says so. A start that diverged is no critical point: its
    curvature is not named."""
    base = ("objective=strict_saddle", "init=fixed", "init.x0=[0.0,1.5]",
            "tracking.enabled=false")
    for overrides, expected, absent in [
            (("init.n_starts=1", "optimizer.lr=0.05"),
             ": converged after \\d+ steps .*at no listed minimum, a saddle point by its "
             "Hessian \\(nearest: ", None),
            (("init.n_starts=1", "optimizer.lr=3"), ": diverged at step", "Hessian"),
            (("init.n_starts=3", "optimizer.lr=[0.05,3]"),
             "6 starts: 3 converged, 3 diverged; 6 at no listed minimum \\(converged there, "
             "by the Hessian: 3 saddle\\)\n  lr=0.05: .*\\(converged there, by the Hessian: "
             "3 saddle\\)\n  lr=3: 3 starts: 3 diverged; 3 at no listed minimum$", None)]:
        cfg = compose_config(*base, *overrides)
        plan = config.build(cfg)
        result = pipeline._descend(plan)
        diag = pipeline._diagnose(cfg, plan, result, None)
        text = pipeline.describe("r", plan.objective, result, pipeline.end_points(diag))
        assert re.search(expected, text), text
        assert absent is None or absent not in text, text
    # without the diagnostics, the line stays as it was
    assert "Hessian" not in pipeline.describe("r", plan.objective, result)


def _completion(line: str, shell: str = "bash") -> str:
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    proc = subprocess.run([sys.executable, "-m", "gdexp", "-sc", f"query={shell}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_shell_completion_of_subcommands_groups_and_options():
    install = subprocess.run([sys.executable, "-m", "gdexp", "run", "-sc", "install=bash"],
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    assert "complete" in install.stdout and "gdexp" in install.stdout
    assert "run" in _completion("gdexp r").split()
    options = _completion("gdexp run objective=rosen").split()
    assert "objective=rosenbrock" in options, options
    assert "optimizer=momentum" in _completion("gdexp run optimizer=mom").split()
    help_text = subprocess.run([sys.executable, "-m", "gdexp", "run", "--help"],
                               capture_output=True, text=True, timeout=120).stdout
    assert "-sc install=bash" in help_text


OBJECTIVE_OPTIONS = sorted(p.stem for p in (CONF_DIR / "objective").glob("*.yaml"))
# a learning objective needs a data set (without one it says which fit, in one line)
DATA_FOR = {"least_squares": "diabetes", "logistic": "breast_cancer", "mlp": "moons"}


@pytest.mark.parametrize("option", OBJECTIVE_OPTIONS)
def test_every_objective_with_its_defaults_gives_a_run_that_does_not_blow_up(option):
    data = [f"data={DATA_FOR[option]}"] if option in DATA_FOR else []
    cfg = compose_config(f"objective={option}", "tracking.enabled=false", *data)
    plan = config.build(cfg)
    result = pipeline._descend(plan)
    assert "diverged" not in result.outcomes, (option, plan.lr, result.status)
    # progress: the loss fell from the start (or the start already was a minimum)
    start, end = result.trace.loss[0], result.trace.loss[-1]
    assert np.all((end < start) | (result.trace.grad_norm[0] == 0)), (option, start, end)


def test_the_short_id_a_sweep_prints_reproduces_its_batched_job_bit_for_bit(outputs):
    # a learning problem with a held-out split: two jobs descended together, each re-run alone
    proc = run_cli("run", "-m", "objective=least_squares", "data=diabetes",
                   "optimizer.lr=0.1,0.6", "init=model", "init.n_starts=2", "stop.max_steps=150",
                   "tracking.plots=false", outputs=outputs, check=True)
    assert "group 1/1: 2 jobs" in proc.stdout
    short = re.findall(r"\[run ([0-9a-f]{8})\]$", proc.stdout, re.M)
    assert len(short) == 2
    for run_id in short:
        again = run_cli("reproduce", run_id, "--check", outputs=outputs)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "reproduced: bit-identical" in again.stdout
    unknown = run_cli("reproduce", "0123abcd", outputs=outputs)
    assert unknown.returncode == 2 and "no run '0123abcd'" in unknown.stderr
