"""`gdexp reproduce`: bit-identical re-runs from a run's own logged config, and refusals."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gdexp import reproduce
from gdexp.config import CONF_DIR
from gdexp.objectives import OBJECTIVES

REPRODUCE = [sys.executable, "-m", "gdexp", "reproduce"]
RUN = [sys.executable, "-m", "gdexp", "run"]
RUN_ID = re.compile(r"^run ([0-9a-f]{32}) in experiment", re.M)

if "rosenbrock" in OBJECTIVES and (CONF_DIR / "objective" / "rosenbrock.yaml").exists():
    OTHER = ["objective=rosenbrock", "optimizer.lr=0.001", "stop.max_steps=3000"]
else:
    OTHER = ["objective.dim=5", "objective.rotate=true", "objective.condition=100",
             "optimizer=momentum", "optimizer.lr=0.01"]

# Each case gets its own outputs folder (store, Hydra folders) so run counts are exact.
CASES = {
    "quadratic": [],
    "other": OTHER,
    # Its folder is also reproduced in PATH mode: cosine's decay_steps is ${stop.max_steps}
    # in .hydra/config.yaml and resolved in artifacts/config.yaml.
    "batched": ["init=uniform", "init.n_starts=20", "schedule=cosine", "optimizer.lr=0.15"],
    # No bound on f: the run overflows, so non-finite entries are compared too.
    "diverging": ["optimizer.lr=0.5", "stop.diverge_above=inf"],
    # Three child runs of one sweep, to be damaged: config, trace, injected config.
    "damaged": ["-m", "optimizer.lr=0.1", "seed=0,1,2"],
}
CHECKED = ["quadratic", "other", "batched", "diverging"]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A migrated empty store, copied into each case's outputs: creating the sqlite tables
    costs each process seconds and is not what these tests are about."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    _client(path.parent).search_experiments()
    return path


def _start(cmd: list[str], outputs: Path, template: Path = None) -> subprocess.Popen:
    if template is not None:
        outputs.mkdir(parents=True)
        shutil.copyfile(template, outputs / "mlflow.db")
    env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).resolve().parents[1])


def _finish(procs: dict) -> dict:
    """Wait for every process; {name: (returncode, stdout, stderr)}."""
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        out[name] = (p.returncode, stdout, stderr)
    return out


def _client(outputs: Path):
    from gdexp import tracking

    return tracking.client(f"sqlite:///{outputs / 'mlflow.db'}")


def _runs(outputs: Path) -> list:
    mlflow_client = _client(outputs)
    ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    return mlflow_client.search_runs(ids)


def _artifacts(outputs: Path, run_id: str) -> Path:
    """Where the store keeps a run's artifacts on disk (asked from the store itself)."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    uri = _client(outputs).get_run(run_id).info.artifact_uri
    path = Path(local_file_uri_to_path(uri))
    assert (path / "config.yaml").is_file(), path
    return path


@pytest.fixture(scope="module")
def originals(tmp_path_factory, empty_store) -> dict:
    """The original runs, all at once (each process is mostly import time)."""
    root = tmp_path_factory.mktemp("reproduce")
    procs = {name: _start(RUN + overrides + ["tracking.plots=false"], root / name, empty_store)
             for name, overrides in CASES.items()}
    out = {}
    for name, (code, stdout, stderr) in _finish(procs).items():
        assert code == 0, f"{name}: gdexp run failed\n{stdout}\n{stderr}"
        ids = _sweep_runs(root / name) if name == "damaged" else RUN_ID.findall(stdout)
        assert len(ids) == (3 if name == "damaged" else 1), stdout
        jobs = sorted((root / name).glob("runs/*/*"))
        case = {"outputs": root / name, "run_id": ids[0], "job": jobs[0] if jobs else None}
        if name == "damaged":
            for kind, run_id in zip(("tampered_config", "tampered_trace", "refused"), ids):
                out[kind] = {**case, "run_id": run_id}
        else:
            out[name] = case
    out["path_store"] = root / "path_store"
    return out


def _sweep_runs(outputs: Path) -> list[str]:
    """A sweep's job runs, in the order of their seeds (a sweep prints short ids only)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(ids) if "mlflow.parentRunId" in r.data.tags]
    return [r.info.run_id for r in sorted(runs, key=lambda r: int(r.data.params["seed"]))]


def _tamper_config(outputs: Path, run_id: str) -> None:
    path = _artifacts(outputs, run_id) / "config.yaml"
    text = path.read_text()
    assert "  lr: 0.1\n" in text
    path.write_text(text.replace("  lr: 0.1\n", "  lr: 0.12\n"))


def _tamper_trace(outputs: Path, run_id: str) -> None:
    path = _artifacts(outputs, run_id) / "trace.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["loss"][7, 0] = np.nextafter(arrays["loss"][7, 0], np.inf)  # one ulp
    np.savez_compressed(path, **arrays)


@pytest.fixture(scope="module")
def checks(originals, empty_store) -> dict:
    """`reproduce ... --check` for every case, each in a process of its own, all at once."""
    _tamper_config(originals["tampered_config"]["outputs"],
                   originals["tampered_config"]["run_id"])
    _tamper_trace(originals["tampered_trace"]["outputs"], originals["tampered_trace"]["run_id"])
    procs = {}
    for name in CHECKED + ["tampered_config", "tampered_trace"]:
        o = originals[name]
        procs[name] = _start(REPRODUCE + [o["run_id"], "--check"], o["outputs"])
    # PATH mode reads the batched run's folder and logs into a store of its own (the config
    # says tracking.uri: null, i.e. the store of the current outputs folder).
    procs["path"] = _start(REPRODUCE + [str(originals["batched"]["job"]), "--check"],
                           originals["path_store"], empty_store)
    return _finish(procs)


@pytest.mark.parametrize("name", CHECKED)
def test_run_id_is_reproduced_bit_for_bit_in_a_new_process(originals, checks, name):
    code, stdout, stderr = checks[name]
    assert code == 0, f"{stdout}\n{stderr}"
    verdict = re.search(r"^reproduced: bit-identical \((\d+) arrays, (\d+) metrics", stdout,
                        re.M)
    assert verdict, stdout
    assert int(verdict.group(1)) == 11 and int(verdict.group(2)) >= 1
    o = originals[name]
    runs = {r.info.run_id: r for r in _runs(o["outputs"])}
    assert len(runs) == 2
    (new,) = [r for i, r in runs.items() if i != o["run_id"]]
    assert new.data.tags["reproduced_from"] == o["run_id"]
    assert new.info.status == "FINISHED"
    old = runs[o["run_id"]]
    # Same config except where it was logged; same outcome and final numbers.
    untracked = {k: v for k, v in old.data.params.items() if not k.startswith("tracking.")}
    assert untracked == {k: v for k, v in new.data.params.items()
                         if not k.startswith("tracking.")}
    assert new.data.metrics == old.data.metrics
    assert new.data.tags["status"] == old.data.tags["status"]
    (folder,) = (o["outputs"] / "reproduce").iterdir()
    assert (folder / "artifacts" / "trace.npz").is_file()


def test_the_diverging_case_really_diverged(originals, checks):
    run = _client(originals["diverging"]["outputs"]).get_run(originals["diverging"]["run_id"])
    assert run.data.tags["status"] == "diverged"
    with np.load(_artifacts(originals["diverging"]["outputs"],
                            originals["diverging"]["run_id"]) / "trace.npz") as trace:
        assert not np.all(np.isfinite(trace["grad_norm"]))  # inf compared as equal bits


def test_path_mode_reproduces_a_hydra_job_folder(originals, checks):
    code, stdout, stderr = checks["path"]
    assert code == 0, f"{stdout}\n{stderr}"
    # The composed .hydra/config.yaml was cross-checked (its ${stop.max_steps} skipped).
    assert re.search(r"^reproduced: bit-identical \(11 arrays, \d+ config keys, 20 start rows",
                     stdout, re.M), stdout
    (run,) = _runs(originals["path_store"])
    assert run.data.tags["reproduced_from"] == str(originals["batched"]["job"])
    assert run.data.tags["status"] == "converged"
    assert len(_runs(originals["batched"]["outputs"])) == 2  # the original's store: untouched



def test_a_tampered_config_artifact_is_detected(checks):
    code, stdout, stderr = checks["tampered_config"]
    assert code == 1, f"{stdout}\n{stderr}"
    assert "NOT reproduced:" in stdout
    assert ("params:optimizer.lr is logged as '0.1' but its config.yaml artifact has '0.12'"
            in stdout)
    assert re.search(r"^  trace\.npz:loss (differs at|has shape)", stdout, re.M), stdout


def test_a_tampered_trace_is_detected_down_to_one_ulp(checks):
    code, stdout, stderr = checks["tampered_trace"]
    assert code == 1, f"{stdout}\n{stderr}"
    lines = stdout[stdout.index("NOT reproduced:"):].splitlines()[1:]
    assert len(lines) == 1, lines
    assert re.fullmatch(r"  trace\.npz:loss differs at 1 of \d+ entries \(max \|Δ\| \S+\)",
                        lines[0]), lines


def _folders(path: Path) -> set:
    return set(path.iterdir()) if path.exists() else set()


def _main(capsys, *args) -> tuple[int, str, str]:
    code = reproduce.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("old, new, message", [
    ("  name: gd\n", "  name: ${oc.env:HOME}\n",
     "optimizer.name: '${oc.env:HOME}' is an interpolation or resolver, refused"),
    ("objective:\n", "objective:\n  _target_: os.system\n",
     "objective._target_: Hydra instantiation key refused"),
    ("basin_tol: 0.01\n", "basin_tol: !!python/object/apply:os.system ['true']\n",
     "line {line}: YAML tag refused (could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system')"),
])
def test_an_injected_config_is_refused_before_anything_runs(originals, monkeypatch, capsys,
                                                           old, new, message):
    o = originals["refused"]
    monkeypatch.setenv("GDEXP_OUTPUTS", str(o["outputs"]))
    path = _artifacts(o["outputs"], o["run_id"]) / "config.yaml"
    clean = path.read_text()
    assert old in clean
    message = message.replace("{line}", str(clean[:clean.index(old)].count("\n") + 1))
    before = len(_runs(o["outputs"])), _folders(o["outputs"] / "reproduce")
    path.write_text(clean.replace(old, new, 1))
    try:
        code, out, err = _main(capsys, o["run_id"], "--check")
    finally:
        path.write_text(clean)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gdexp reproduce: error: run ")
    assert message in err
    # nothing was run, written or logged
    assert (len(_runs(o["outputs"])), _folders(o["outputs"] / "reproduce")) == before


def test_errors_are_one_line(originals, tmp_path, monkeypatch, capsys):
    o = originals["refused"]
    monkeypatch.setenv("GDEXP_OUTPUTS", str(o["outputs"]))
    code, _, err = _main(capsys, "0" * 32)
    assert code == 2 and err.count("\n") == 1
    assert f"RUN_ID: no run '{'0' * 32}' in sqlite:///{o['outputs']}/mlflow.db" in err

    monkeypatch.setenv("GDEXP_OUTPUTS", str(tmp_path / "empty"))
    code, _, err = _main(capsys, o["run_id"])
    assert code == 2 and err.count("\n") == 1
    assert f"RUN_ID: no MLflow store at '{tmp_path}/empty/mlflow.db'" in err

    code, _, err = _main(capsys, o["run_id"], "--uri", "http://127.0.0.1:9")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("gdexp reproduce: error: --uri: cannot reach 'http://127.0.0.1:9'")

    code, _, err = _main(capsys, str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "holds neither artifacts/config.yaml nor .hydra/config.yaml" in err

    code, _, err = _main(capsys, "./no/such/folder")
    assert code == 2 and "PATH: './no/such/folder' is not a run folder (no such folder)" in err
    assert not (tmp_path / "empty").exists()  # looking for a store never creates one


def test_array_comparison_is_bitwise_with_nan_equal_to_nan():
    a = np.array([1.0, np.nan, np.inf, 0.0])
    assert reproduce.array_differences("x", a, a.copy()) == []
    b = a.copy()
    b[0] = np.nextafter(1.0, 2.0)
    assert reproduce.array_differences("x", a, b) == [
        "x differs at 1 of 4 entries (max |Δ| 2.2e-16)"]
    b = a.copy()
    b[1] = 0.0
    assert reproduce.array_differences("x", a, b) == [
        "x differs at 1 of 4 entries (1 where only one side is finite)"]
    b = a.copy()
    b[3] = -0.0
    assert reproduce.array_differences("x", a, b) == [
        "x is equal in value but not in bits (signed zeros or NaN payloads)"]
    assert reproduce.array_differences("x", a, a[:3]) == [
        "x has shape (4,) in the original but (3,) now"]
    assert reproduce.array_differences("n", np.arange(3), np.arange(3.0)) == [
        "n has dtype int64 in the original but float64 now"]


@pytest.mark.parametrize("text, message", [
    ("a:\n  b: [1, '${x}']\n", "a.b[1]: '${x}' is an interpolation or resolver, refused"),
    ("a: ???\n", "a: '???' (a missing value) refused"),
    ("a: 2020-01-01\n", "a: a YAML value of type date refused"),
    ("a: 1\na: 2\n", "duplicate key 'a' (line 2)"),
    ("'${k}': 1\n", "${k}: interpolation in a key refused"),
    ("- 1\n", "expected a mapping of config groups, got list"),
])
def test_reading_a_config_back_accepts_plain_data_only(text, message):
    with pytest.raises(reproduce.ReproduceError, match=re.escape(message)):
        reproduce.read_config(text, "config.yaml")


def test_a_plain_config_reads_back_as_written():
    text = "seed: 0\nstop:\n  grad_tol: 1.0e-06\n  value_tol: 1e-8\n  diverge_above: .inf\n" \
           "tracking:\n  uri: null\n"
    assert reproduce.read_config(text, "c") == {
        "seed": 0, "stop": {"grad_tol": 1e-6, "value_tol": 1e-8, "diverge_above": float("inf")},
        "tracking": {"uri": None}}


def test_the_blas_tag_names_numpy_s_own_whatever_else_is_loaded():
    """scipy's wheel loads a BLAS of its own beside numpy's (a learning problem's data set
    loads it), and threadpoolctl lists the two in an order that follows the process's hash
    seed: the run's BLAS tags, which reproduce compares, must name numpy's every time."""
    def python(code: str, seed: int) -> str:
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=True).stdout.strip()

    versions = ("from threadpoolctl import threadpool_info; "
                "print(' '.join(sorted(i['version'] for i in threadpool_info() "
                "if i['user_api'] == 'blas')))")
    tagged = ("import numpy, scipy.linalg; from gdexp import pipeline; "
              "print(pipeline.environment_tags()['blas.version'])")
    if len(python("import numpy, scipy.linalg; " + versions, 0).split()) < 2:
        pytest.skip("scipy computes with numpy's BLAS here: there is no other to confuse")
    own = python("import numpy; " + versions, 0)
    assert {python(tagged, seed) for seed in range(8)} == {own}
