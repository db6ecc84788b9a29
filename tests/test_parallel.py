"""Sweeps in parallel (joblib, submitit, a tracking server, optuna): every job's run arrives intact."""
from __future__ import annotations

import glob
import importlib.util
import math
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gdexp.tracking import thin_indices

from .conftest import run_cli, store_uri
from .test_serve import Served, free_port

CHEAP = ("stop.max_steps=50", "tracking.plots=false", "diagnostics.enabled=false")
# 10 rates x 4 seeds = 40 jobs on the quadratic (eigenvalues 1 and 10, stable below 0.2). The
# fixed start makes the seed irrelevant to the result, so the four copies of a rate must agree
# whichever worker ran them and whatever it ran before.
RATES = [0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15, 0.17, 0.19]
GRID = ("optimizer.lr=" + ",".join(map(str, RATES)), "seed=range(0,4)")
N_GRID = len(RATES) * 4
PROGRESS = re.compile(r"^job (\d+)/(\d+)  ", re.M)


def sweep_runs(client: MlflowClient, experiment: str, n_jobs: int):
    """Check the sweep's shape in the store; return (parent, children)."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} missing"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("gdexp.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("gdexp.sweep") != "true"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.total_jobs"] == str(n_jobs)
    assert len(children) == n_jobs
    assert {c.data.tags.get("mlflow.parentRunId") for c in children} == {parent.info.run_id}
    assert [c.info.status for c in children] == ["FINISHED"] * n_jobs
    for c in children:
        loss = client.get_metric_history(c.info.run_id, "loss")
        steps = int(c.data.metrics["steps"])
        cap = int(c.data.params["tracking.max_curve_points"])
        assert [m.step for m in loss] == thin_indices(steps + 1, cap).tolist(), c.info.run_name
        assert all(math.isfinite(m.value) for m in loss)
        assert loss[-1].value == pytest.approx(c.data.metrics["final_loss"])
    # nothing strayed into another experiment
    others = [e.experiment_id for e in client.search_experiments() if e.name != experiment]
    assert others == [] or client.search_runs(others) == []
    return parent, children


def assert_grid_consistent(children) -> None:
    """Same rate, same result (whatever worker ran it); different rates, different results."""
    by_lr: dict[float, set[float]] = {}
    for c in children:
        by_lr.setdefault(float(c.data.params["optimizer.lr"]), set()).add(
            c.data.metrics["final_loss"])
    assert sorted(by_lr) == pytest.approx(RATES)
    assert all(len(losses) == 1 for losses in by_lr.values()), by_lr
    assert len({next(iter(v)) for v in by_lr.values()}) == len(RATES)
    assert sorted({c.data.params["seed"] for c in children}) == ["0", "1", "2", "3"]


def overlapping_pairs(children) -> int:
    """How many pairs of runs were open at the same time (proof that jobs ran in parallel)."""
    spans = sorted((c.info.start_time, c.info.end_time) for c in children)
    return sum(1 for i, (_, end) in enumerate(spans) for start, _ in spans[i + 1:] if start < end)


def assert_progress(stdout: str, n_jobs: int) -> None:
    seen = PROGRESS.findall(stdout)
    assert sorted(int(k) for k, _ in seen) == list(range(1, n_jobs + 1)), seen
    assert {total for _, total in seen} == {str(n_jobs)}


def postgres_binaries() -> Path | None:
    """The folder holding PostgreSQL's server programs (initdb, pg_ctl), if installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on a free local port; yields its database URI."""
    bin_dir = postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("the PostgreSQL driver psycopg is not installed (pip install -e '.[test]')")
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user, in a folder
    # that user owns (pytest's own temporary folders are private to root).
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    root = Path(tempfile.mkdtemp(prefix="gdexp-pg-"))
    if as_user:
        shutil.chown(root, user="postgres")
    data, port = root / "data", free_port()
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "gdexp",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True,
                       timeout=120)
        subprocess.run([*pg_ctl, "-l", str(root / "postgres.log"), "-w", "-t", "60", "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
        yield f"postgresql://gdexp@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def integrity(db: Path) -> list:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchall()


def test_progress_counts_the_jobs_of_a_sweep(outputs):
    proc = run_cli("run", "-m", "hydra/launcher=basic", "optimizer.lr=0.05,0.1", "seed=range(0,3)",
                   "objective=glob([quadratic,booth])", "tracking=off", *CHEAP,
                   outputs=outputs, check=True)
    assert_progress(proc.stdout, 12)
    # one line per job: its number, the run's name (what sets it apart) and its outcome
    line = next(l for l in proc.stdout.splitlines() if l.startswith("job 12/12  "))
    assert line.startswith("job 12/12  quadratic-gd-lr0.1-s2: step budget used up after 50 steps")
    assert len(proc.stdout.strip().splitlines()) == 12, proc.stdout
    single = run_cli("run", "tracking=off", *CHEAP, outputs=outputs, check=True)
    assert not PROGRESS.search(single.stdout)


@pytest.mark.slow
def test_joblib_sweep_into_a_fresh_sqlite_store_loses_nothing(outputs):
    assert not (outputs / "mlflow.db").exists()
    began = time.monotonic()
    proc = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID,
                   "tracking.experiment=parallel", *CHEAP, outputs=outputs, timeout=900)
    print(f"{N_GRID} joblib jobs in {time.monotonic() - began:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_progress(proc.stdout, N_GRID)
    client = MlflowClient(store_uri(outputs))
    _, children = sweep_runs(client, "parallel", N_GRID)
    assert_grid_consistent(children)
    assert overlapping_pairs(children) > 0
    assert integrity(outputs / "mlflow.db") == [("ok",)]


@pytest.mark.slow
def test_joblib_sweep_through_a_tracking_server_loses_nothing(outputs, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = Served(["server", "--port", str(port)], outputs, tmp_path / "server.out")
    try:
        server.wait_for(re.compile(r"log runs into it: +(.*)$", re.M))
        began = time.monotonic()
        proc = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID,
                       "tracking=server", f"tracking.uri={uri}", "tracking.experiment=parallel",
                       *CHEAP, outputs=outputs, timeout=900)
        print(f"{N_GRID} joblib jobs through the server in {time.monotonic() - began:.1f} s")
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        parent, children = sweep_runs(client, "parallel", N_GRID)
        assert_grid_consistent(children)
        assert all(c.data.params["tracking.uri"] == uri for c in children)
        assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {
            "config.yaml", "trace.npz"}
    finally:
        server.cleanup()
    assert integrity(outputs / "mlflow.db") == [("ok",)]
    # the server wrote into the sqlite store under outputs/: the same runs are there
    local = MlflowClient(store_uri(outputs))
    assert local.get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_joblib_sweep_through_a_server_on_postgresql_loses_nothing(outputs, tmp_path, postgres):
    """The team setup of docs/cluster.md on one machine: PostgreSQL behind `gdexp server`."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = Served(["server", "--backend-store-uri", postgres, "--port", str(port)], outputs,
                    tmp_path / "server.out")
    try:
        server.wait_for(re.compile(r"log runs into it: +(.*)$", re.M))
        assert f"store {postgres}," in server.output()
        proc = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "optimizer.lr=0.01,0.05,0.1,0.15", "seed=0,1", "tracking=server",
                       f"tracking.uri={uri}", "tracking.experiment=team", *CHEAP,
                       outputs=outputs, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        _, children = sweep_runs(client, "team", 8)
        assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {
            "config.yaml", "trace.npz"}
    finally:
        server.cleanup()
    # the runs live in PostgreSQL, not in a sqlite file under outputs/
    assert not (outputs / "mlflow.db").exists()
    import sqlalchemy

    with sqlalchemy.create_engine(postgres).connect() as con:
        rows = con.execute(sqlalchemy.text("SELECT status, count(*) FROM runs GROUP BY status"))
        assert dict(rows.all()) == {"FINISHED": 9}


def test_batched_sweep_straight_into_postgresql_loses_nothing(outputs, postgres):
    """A batched sweep whose helper processes write the runs' rows into PostgreSQL, each on
    connections of its own (forked after the sweep's process opened the store)."""
    proc = run_cli("run", "-m", "optimizer.lr=0.01,0.05,0.1,0.15", "seed=0,1",
                   f"tracking.uri={postgres}", "tracking.experiment=team", *CHEAP,
                   outputs=outputs, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "group 1/1: 8 jobs" in proc.stdout
    client = MlflowClient(tracking_uri=postgres)
    _, children = sweep_runs(client, "team", 8)
    assert {c.data.params["optimizer.lr"] for c in children} == {"0.01", "0.05", "0.1", "0.15"}
    assert not (outputs / "mlflow.db").exists()


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process(outputs):
    assert not (outputs / "mlflow.db").exists()
    proc = run_cli("run", "-m", "hydra/launcher=submitit_local", "optimizer.lr=0.05,0.1",
                   "seed=0,1", "tracking.experiment=submitit", *CHEAP, outputs=outputs,
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri(outputs))
    parent, children = sweep_runs(client, "submitit", 4)
    sweep_dir = Path(parent.data.tags["sweep_dir"])
    # submitit's local job id is the process id of the job: one folder, one process per job
    logs = sorted(sweep_dir.glob(".submitit/*/*_0_log.out"))
    assert len({p.parent.name for p in logs}) == 4, logs
    text = "".join(p.read_text() for p in logs)
    assert_progress(text, 4)  # the workers print the progress into their own logs
    assert integrity(outputs / "mlflow.db") == [("ok",)]


@pytest.mark.slow
def test_lr_search_logs_the_best_rate_on_the_sweep_run(outputs):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_cli("run", "experiment=lr_search", "hydra.sweeper.n_trials=6",
                   "stop.max_steps=500", outputs=outputs, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_progress(proc.stdout, 6)
    client = MlflowClient(store_uri(outputs))
    parent, children = sweep_runs(client, "lr_search", 6)
    rates = [float(c.data.params["optimizer.lr"]) for c in children]
    assert len(set(rates)) == 6 and all(1e-4 <= r <= 1e-2 for r in rates)
    best = min(children, key=lambda c: c.data.metrics.get("final_loss", math.inf))
    p, m = parent.data.params, parent.data.metrics
    assert float(p["best.optimizer.lr"]) == float(best.data.params["optimizer.lr"])
    assert m["best_lr"] == pytest.approx(float(best.data.params["optimizer.lr"]), rel=1e-12)
    assert m["best_value"] == pytest.approx(best.data.metrics["final_loss"], rel=1e-12)
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert p["sweep.sweeper"] == "OptunaSweeper"
    assert f"best: optimizer.lr={best.data.params['optimizer.lr']}" in proc.stdout
