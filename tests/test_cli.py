"""End to end: the real `gdexp` command in subprocesses, read back from MLflow as a user would."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from .conftest import run_cli, store_uri


def all_runs(outputs, experiment="gdexp"):
    client = MlflowClient(store_uri(outputs))
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_help_lists_subcommands_and_config_groups(outputs):
    top = run_cli("--help", outputs=outputs, check=True)
    assert "run" in top.stdout and "usage: gdexp" in top.stdout
    helped = run_cli("run", "--help", outputs=outputs, check=True)
    for group in ("objective:", "init:", "optimizer:", "stop:", "tracking:", "experiment:"):
        assert group in helped.stdout
    assert "rosenbrock" in helped.stdout and "lr_regimes" in helped.stdout
    script = Path(sys.executable).parent / "gdexp"  # the console script of this environment
    console = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert console.returncode == 0 and console.stdout == top.stdout


def test_single_run_is_logged_with_params_curves_tags_and_artifacts(outputs, tmp_path):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "gdexp", "run", "objective=rosenbrock", "optimizer.lr=0.002",
         "init.x0=[-1.2,1.0]", "stop.max_steps=20000", "stop.grad_tol=1e-5",
         "tracking.max_curve_points=200", "tracking.plots=false"],
        cwd=elsewhere, capture_output=True, text=True, env={**os.environ,
                                                            "GDEXP_OUTPUTS": str(outputs)})
    assert proc.returncode == 0, proc.stderr
    assert "rosenbrock-gd-lr0.002-s0: converged after " in proc.stdout
    assert "(gradient norm ≤ grad_tol)" in proc.stdout
    assert "/#/experiments/" in proc.stdout
    assert list(elsewhere.iterdir()) == []  # nothing written in the working directory
    client, runs = all_runs(outputs)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "rosenbrock-gd-lr0.002-s0"
    assert run.info.run_id in proc.stdout
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["optimizer.lr"] == "0.002" and p["objective.name"] == "rosenbrock"
    assert p["init.x0"] == "[-1.2, 1.0]" and p["stop.max_steps"] == "20000"
    assert t["status"] == "converged" and t["stop_rule"] == "grad_tol" and t["basin"] == "global"
    assert t["objective"] == "rosenbrock" and len(t["config_hash"]) == 16
    assert abs(m["final_x.0"] - 1) < 1e-3 and abs(m["final_x.1"] - 1) < 1e-3
    assert m["final_loss"] < 1e-8 and m["steps"] > 1000
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert 100 < len(loss) <= 200 and loss[0].step == 0 and loss[-1].step == m["steps"]
    assert loss[0].value == pytest.approx(24.2)  # f(−1.2, 1) = (1 + 1.2)² + 100 (1 − 1.44)²
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "trace.npz", "starts.csv"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    logged = yaml.safe_load(open(local))
    assert logged["optimizer"]["lr"] == 0.002 and logged["objective"]["name"] == "rosenbrock"
    trace = np.load(client.download_artifacts(run.info.run_id, "trace.npz", str(tmp_path)))
    assert trace["loss"].shape[0] == m["steps"] + 1  # full resolution in the artifact
    job_dirs = list((outputs / "runs").glob("*/*"))
    assert len(job_dirs) == 1 and (job_dirs[0] / ".hydra" / "config.yaml").exists()


def test_sweep_groups_jobs_under_a_parent_run(outputs):
    proc = run_cli("run", "-m", "optimizer.lr=0.1,0.25", "stop.max_steps=500",
                   "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    client, runs = all_runs(outputs)
    parents = [r for r in runs if r.data.tags.get("gdexp.sweep") == "true"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    assert by_lr["0.1"].data.tags["status"] == "converged"
    diverged = by_lr["0.25"]
    assert diverged.data.tags["status"] == "diverged"
    assert diverged.data.tags["stop_rule"] == "diverge_above"
    k = int(diverged.data.tags["diverged_at_step"])
    assert k == diverged.data.metrics["steps"] and k > 0
    assert all(c.info.status == "FINISHED" for c in children)
    for c in children:
        for key in ("loss", "grad_norm"):
            assert all(math.isfinite(x.value) for x in client.get_metric_history(c.info.run_id, key))
        assert all(math.isfinite(v) for v in c.data.metrics.values())


def test_batched_starts_log_a_table_and_summary(outputs, tmp_path):
    proc = run_cli("run", "objective=himmelblau", "init=uniform", "init.n_starts=50",
                   "optimizer.lr=0.01", "stop.max_steps=3000", "tracking.plots=false",
                   outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    client, (run,) = all_runs(outputs)
    m = run.data.metrics
    assert m["n_starts"] == 50 and 0 <= m["fraction_converged"] <= 1
    assert m["fraction_global"] == pytest.approx(1.0)  # Himmelblau's four minima are all global
    table = client.download_artifacts(run.info.run_id, "starts.csv", str(tmp_path))
    rows = open(table).read().strip().splitlines()
    assert len(rows) == 51 and rows[0].startswith("start,lr,x0.0,x0.1,x.0,x.1,f,")


def test_bad_input_exits_nonzero_with_one_line_and_leaves_no_run(outputs):
    proc = run_cli("run", "optimizer.lr=-1", outputs=outputs)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "gdexp: error: optimizer.lr: expected a number > 0, got -1"
    proc = run_cli("run", "tracking.uri=http://127.0.0.1:9", outputs=outputs)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "gdexp: error: tracking.uri: cannot reach 'http://127.0.0.1:9'")
    proc = run_cli("run", "tracking.uri=ftp://example/x", outputs=outputs)
    assert proc.returncode == 2 and "unsupported scheme 'ftp'" in proc.stderr
    if (outputs / "mlflow.db").exists():
        client = MlflowClient(store_uri(outputs))
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_tracking_off_writes_no_store(outputs):
    proc = run_cli("run", "tracking=off", outputs=outputs, check=True)
    assert "quadratic-gd-lr" in proc.stdout
    assert not (outputs / "mlflow.db").exists()
    assert list((outputs / "runs").glob("*/*/artifacts/trace.npz"))


def test_sigterm_ends_the_run_killed(outputs, tmp_path):
    env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gdexp", "run",
                                 "stop.max_steps=100000000", "stop.grad_tol=0",
                                 "optimizer.lr=1e-9"], env=env, stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
    try:
        # The progress line appears only while the descent runs, i.e. once the run exists;
        # opening the store earlier could race with its creation by the child.
        deadline = time.time() + 300
        while time.time() < deadline and "  step " not in log.read_text():
            assert proc.poll() is None, log.read_text()
            time.sleep(1)
        _, runs = all_runs(outputs)
        assert [r.info.status for r in runs] == ["RUNNING"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    _, runs = all_runs(outputs)
    assert [r.info.status for r in runs] == ["KILLED"]


def test_an_exception_during_descent_ends_the_run_failed(outputs, monkeypatch):
    from gdexp import descent, pipeline

    from .conftest import compose_config

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(descent, "run", broken)
    cfg = compose_config("tracking.plots=false")
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.execute(cfg, outputs / "job", [])
    _, runs = all_runs(outputs)
    assert [r.info.status for r in runs] == ["FAILED"]


def test_skip_finished_skips_the_same_config_and_runs_a_changed_one(outputs):
    common = ("tracking.skip_finished=true", "tracking.plots=false", "stop.max_steps=50")
    first = run_cli("run", "optimizer.lr=0.1", *common, outputs=outputs, check=True)
    assert "skipped" not in first.stdout
    again = run_cli("run", "optimizer.lr=0.1", *common, outputs=outputs, check=True)
    _, runs = all_runs(outputs)
    assert len(runs) == 1
    assert f"skipped, run {runs[0].info.run_id} with the same config and code is FINISHED" \
        in again.stdout
    changed = run_cli("run", "optimizer.lr=0.05", *common, outputs=outputs, check=True)
    assert "skipped" not in changed.stdout
    _, runs = all_runs(outputs)
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["0.05", "0.1"]
    # a sweep re-launched after an interruption runs only what is missing
    sweep = run_cli("run", "-m", "optimizer.lr=0.1,0.05,0.02", *common, outputs=outputs,
                    check=True)
    assert sweep.stdout.count("skipped, run") == 2
    _, runs = all_runs(outputs)
    children = [r for r in runs if r.data.tags.get("gdexp.sweep") != "true"]
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.02", "0.05", "0.1"]


def test_quick_help_is_hydras_help_without_importing_the_core(outputs):
    """`gdexp run --help` prints Hydra's text (as `run seed=0 --help`, which Hydra renders)
    without loading numpy, autograd or the tracking stack."""
    quick = run_cli("run", "--help", outputs=outputs, check=True)
    hydra = run_cli("run", "seed=0", "--help", outputs=outputs, check=True)
    assert quick.stdout == hydra.stdout
    code = ("import sys, gdexp.help\n"
            "assert gdexp.help.quick_help() is not None\n"
            "heavy = [m for m in ('numpy', 'autograd', 'mlflow', 'matplotlib', 'hydra')"
            " if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_sweep_with_a_bad_option_in_a_later_job_fails_before_any_job(outputs):
    proc = run_cli("run", "-m", "objective=quadratic,no_such_objective", "tracking.plots=false",
                   "diagnostics.enabled=false", outputs=outputs)
    assert proc.returncode != 0
    assert "no_such_objective" in proc.stderr
    assert not list(outputs.glob("sweeps/*/*/0/.hydra"))  # job 0 never started
