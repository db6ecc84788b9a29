"""The store and the files under faults, as a user meets them: races, broken stores, full and
read-only disks, hostile configs, telemetry, where artifacts go, serving beyond localhost."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gdexp import reproduce, serve

from .conftest import run_cli

QUICK = ("tracking.plots=false", "diagnostics.enabled=false", "stop.max_steps=50")


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def runs_in(db: Path) -> list[tuple[str, str]]:
    """(name, status) of every run, read with sqlite itself (independent of MLflow)."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        return c.execute("SELECT name, status FROM runs ORDER BY name").fetchall()


def assert_one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------- parallel first use

@pytest.mark.slow  # two rounds of four processes: ~20 s, more on a loaded machine
def test_parallel_first_use_of_a_new_store_stores_every_run(outputs, tmp_path):
    env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
    for round_ in range(2):
        db = tmp_path / f"round{round_}" / "x.db"  # the folder does not exist either
        procs = [subprocess.Popen([sys.executable, "-m", "gdexp", "run",
                                   f"tracking.uri={sqlite_uri(db)}", f"seed={seed}", *QUICK],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
                 for seed in range(1, 5)]
        results = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, err
        assert runs_in(db) == [(f"quadratic-gd-lr0.1-s{s}", "FINISHED") for s in range(1, 5)]
        with contextlib.closing(sqlite3.connect(db)) as c:
            tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master")]
            assert not [t for t in tables if t.startswith("_alembic_tmp_")]
            assert len(c.execute("SELECT * FROM alembic_version").fetchall()) == 1
        assert (db.parent / "x.db.lock").exists()
    # and the store opens again for any command
    report = run_cli("report", "--uri", sqlite_uri(db), "gdexp", outputs=outputs)
    assert report.returncode == 0, report.stderr


@pytest.mark.slow  # `mlflow db upgrade` alone takes ~5 s
def test_a_half_migrated_store_gets_a_recovery_line_and_the_advice_works(outputs, tmp_path):
    db = tmp_path / "s.db"
    run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK, outputs=outputs, check=True)
    with contextlib.closing(sqlite3.connect(db)) as c:  # what a migration killed midway leaves
        c.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250), value VARCHAR(5000))")
        c.commit()
    for command in (("run", f"tracking.uri={sqlite_uri(db)}", *QUICK),
                    ("report", "--uri", sqlite_uri(db))):
        proc = run_cli(*command, outputs=outputs, timeout=60)
        line = assert_one_line_error(proc, "half-migrated", "_alembic_tmp_tags", "1 runs",
                                     "DROP TABLE _alembic_tmp_tags", "mlflow db upgrade")
    assert runs_in(db) == [("quadratic-gd-lr0.1-s0", "FINISHED")]  # nothing added or lost
    # follow the advice
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("DROP TABLE _alembic_tmp_tags")
        c.commit()
    upgrade = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", sqlite_uri(db)],
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    run_cli("run", f"tracking.uri={sqlite_uri(db)}", "seed=1", *QUICK, outputs=outputs,
            check=True)
    assert len(runs_in(db)) == 2, line


def test_a_store_without_runs_left_half_made_says_delete_it(outputs, tmp_path):
    db = tmp_path / "s.db"
    run_cli("run", f"tracking.uri={sqlite_uri(db)}", "tracking.experiment=other", *QUICK,
            outputs=outputs, check=True)
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("DELETE FROM alembic_version")  # alembic: "expected to match one row"
        c.execute("DELETE FROM runs")
        c.commit()
    proc = run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK, outputs=outputs)
    assert_one_line_error(proc, "half-migrated", "0 schema versions", "holds no runs",
                          f"delete {str(db)!r}")
    db.unlink()
    run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK, outputs=outputs, check=True)


# ------------------------------------------------------------------- store errors in run

def _not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    return path, ("not an sqlite database",)


def _truncated(tmp_path):
    good = tmp_path / "good.db"
    with contextlib.closing(sqlite3.connect(good)) as c:
        c.execute("CREATE TABLE t (x TEXT)")
        c.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 2000)
        c.commit()
    path = tmp_path / "cut.db"
    path.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 3])
    return path, ("damaged", "malformed")


def _directory(tmp_path):
    path = tmp_path / "adir.db"
    path.mkdir()
    return path, ("is a directory",)


def _unwritable(tmp_path):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, a folder nobody can create files in")
    return Path("/proc/gdexp-store.db"), ("cannot create the store in '/proc'",)


@pytest.mark.parametrize("make", [_not_a_database, _truncated, _directory, _unwritable])
def test_store_errors_in_run_are_one_line_within_seconds(outputs, tmp_path, make):
    path, fragments = make(tmp_path)
    began = time.monotonic()
    proc = run_cli("run", f"tracking.uri={sqlite_uri(path)}", *QUICK, outputs=outputs,
                   timeout=100)
    elapsed = time.monotonic() - began
    assert_one_line_error(proc, "gdexp: error: tracking.uri:", *fragments)
    # MLflow alone retries ~100 s; a 60 s margin for a loaded machine
    assert elapsed < 60, elapsed
    assert not (outputs / "mlflow.db").exists()


def test_an_experiment_name_the_store_refuses_is_one_line(outputs):
    proc = run_cli("run", "tracking.experiment=" + "e" * 1000, *QUICK, outputs=outputs)
    assert_one_line_error(proc, "tracking.experiment:", "1000 characters", "500")
    assert runs_in(outputs / "mlflow.db") == []


# ------------------------------------------------------------------- full and read-only disks

@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int):
    """A small tmpfs at ``path`` (needs root and mount permission, else the test is skipped)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                               str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command: cannot simulate a full or read-only disk")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to simulate a full or read-only disk "
                    f"({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave_kb: int) -> None:
    """Fill the filesystem of ``path`` so that about ``leave_kb`` KB stay free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / f"filler-{uuid.uuid4().hex}", "wb") as fh:
        with contextlib.suppress(OSError):
            fh.write(b"\0" * max(0, free - leave_kb * 1024))


def remount_readonly(path: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.strip()})")


def test_full_outputs_folder_fails_the_run_with_one_line(tmp_path):
    db = tmp_path / "store" / "s.db"
    with tmpfs(tmp_path / "disk", 4096) as disk:
        outputs = disk / "outputs"
        fill(disk, leave_kb=150)  # room for Hydra's job folder, not for the artifacts
        proc = run_cli("run", f"tracking.uri={sqlite_uri(db)}", "init=uniform",
                       "init.n_starts=3000", "tracking.plots=false", outputs=outputs)
        assert_one_line_error(proc, "cannot write", str(outputs / "runs"), "/artifacts",
                              "No space left on device")
        assert runs_in(db) == [("quadratic-gd-lr0.1-s0-n3000", "FAILED")]
        job = next((outputs / "runs").glob("*/*"))
        assert not (job / "artifacts").exists() and not (job / "artifacts.partial").exists()
        # completely full: Hydra cannot even write the job folder
        fill(disk, leave_kb=0)
        proc = run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK, outputs=outputs)
        assert_one_line_error(proc, "cannot write", str(outputs), "No space left on device")
        assert len(runs_in(db)) == 1


def test_full_store_disk_is_one_line_and_leaves_the_store_intact(tmp_path):
    outputs = tmp_path / "outputs"
    with tmpfs(tmp_path / "disk", 3072) as disk:
        db = disk / "s.db"
        run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK, outputs=outputs, check=True)
        fill(disk, leave_kb=0)
        proc = run_cli("run", f"tracking.uri={sqlite_uri(db)}", "seed=1", *QUICK,
                       outputs=outputs)
        assert_one_line_error(proc, "tracking.uri:", str(db), "database or disk is full")
        with contextlib.closing(sqlite3.connect(db)) as c:
            assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert runs_in(db) == [("quadratic-gd-lr0.1-s0", "FINISHED")]


def test_a_new_store_on_a_full_disk_leaves_no_half_made_db(tmp_path):
    outputs = tmp_path / "outputs"
    with tmpfs(tmp_path / "disk", 512) as disk:  # less than an empty MLflow store (~1.1 MB)
        db = disk / "s.db"
        proc = run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK, outputs=outputs)
        assert_one_line_error(proc, "tracking.uri:", "full")
        assert not db.exists()


def test_read_only_outputs_and_store_are_one_line(tmp_path):
    with tmpfs(tmp_path / "disk", 8192) as disk:
        db = disk / "s.db"
        run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK, outputs=tmp_path / "out",
                check=True)
        remount_readonly(disk)
        proc = run_cli("run", f"tracking.uri={sqlite_uri(tmp_path / 'elsewhere.db')}", *QUICK,
                       outputs=disk / "outputs")
        assert_one_line_error(proc, "cannot write", str(disk / "outputs"),
                              "Read-only file system")
        proc = run_cli("run", f"tracking.uri={sqlite_uri(db)}", *QUICK,
                       outputs=tmp_path / "out")
        assert_one_line_error(proc, "tracking.uri:", str(db), "readonly database")
        assert runs_in(db) == [("quadratic-gd-lr0.1-s0", "FINISHED")]
        # a read-only store can still be browsed
        report = run_cli("report", "--uri", sqlite_uri(db), "gdexp", outputs=tmp_path / "out")
        assert report.returncode == 0, report.stderr


# ------------------------------------------------------------------- hostile configs

def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\ntracking: {enabled: false}\n"


def test_a_logged_alias_bomb_is_refused_at_once(outputs, tmp_path):
    folder = tmp_path / "run"
    (folder / "artifacts").mkdir(parents=True)
    (folder / "artifacts" / "config.yaml").write_text(alias_bomb())
    proc = run_cli("reproduce", str(folder), outputs=outputs, timeout=60)
    assert_one_line_error(proc, "line 1", "anchors and aliases refused")


def test_yaml_size_and_node_bounds():
    with pytest.raises(reproduce.ReproduceError, match="anchors and aliases refused"):
        reproduce.parse_yaml("a: &x 1\nb: 2\n", "c.yaml")
    with pytest.raises(reproduce.ReproduceError, match="characters refused"):
        reproduce.parse_yaml("a: " + "1" * (reproduce.MAX_YAML_BYTES + 1), "c.yaml")
    many = "[" + ", ".join(["1"] * (reproduce.MAX_YAML_NODES + 1)) + "]"
    assert len(many) < reproduce.MAX_YAML_BYTES
    with pytest.raises(reproduce.ReproduceError, match="YAML nodes refused"):
        reproduce.parse_yaml(many, "c.yaml")
    assert reproduce.parse_yaml("a: {b: [1, 2.5e-3]}\n", "c.yaml") == {"a": {"b": [1, 2.5e-3]}}


# ------------------------------------------------------------------- privacy and footprint

TELEMETRY = """
import os, sys
from gdexp import tracking
tracking.client(sys.argv[1])
from mlflow.telemetry.client import get_telemetry_client
print(os.environ["MLFLOW_DISABLE_TELEMETRY"], get_telemetry_client() is None)
"""


def test_telemetry_is_off_unless_the_user_turns_it_on(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    uri = sqlite_uri(tmp_path / "t.db")
    off = subprocess.run([sys.executable, "-c", TELEMETRY, uri], capture_output=True,
                         text=True, env=env, timeout=120)
    assert off.stdout.split() == ["true", "True"], off.stderr
    on = subprocess.run([sys.executable, "-c", TELEMETRY, uri], capture_output=True, text=True,
                        env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"}, timeout=120)
    assert on.stdout.split()[0] == "false", on.stderr  # the user's choice is kept


def test_the_default_experiment_writes_under_outputs_not_the_cwd(outputs, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    full_env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
    proc = subprocess.run([sys.executable, "-m", "gdexp", "run", "tracking.experiment=Default",
                           *QUICK], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(cwd.iterdir()) == []
    with contextlib.closing(sqlite3.connect(outputs / "mlflow.db")) as c:
        (location,), = c.execute("SELECT artifact_uri FROM runs").fetchall()
    assert location.startswith((outputs / "mlartifacts").as_uri()), location


def test_artifacts_are_stored_once_and_reproduce_path_still_checks(outputs):
    run_cli("run", "init=uniform", "init.n_starts=50", "tracking.plots=false", "seed=3",
            outputs=outputs, check=True)
    job = next((outputs / "runs").glob("*/*/artifacts"))
    with contextlib.closing(sqlite3.connect(outputs / "mlflow.db")) as c:
        (uri,), = c.execute("SELECT artifact_uri FROM runs").fetchall()
    stored = Path(uri[len("file://"):])
    files = sorted(p.relative_to(job) for p in job.rglob("*") if p.is_file())
    assert Path("trace.npz") in files and Path("config.yaml") in files
    assert sorted(p.relative_to(stored) for p in stored.rglob("*") if p.is_file()) == files
    for name in files:  # one copy on disk, two names
        assert os.stat(job / name).st_ino == os.stat(stored / name).st_ino
        assert os.stat(job / name).st_nlink == 2
    check = run_cli("reproduce", str(job.parent), "--check", outputs=outputs)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "bit-identical" in check.stdout


# ------------------------------------------------------------------- serving beyond localhost

@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False),
                                          ("::1", False), ("0.0.0.0", True), ("::", True),
                                          ("192.0.2.7", True)])
def test_exposure_warning_for_non_loopback_hosts(host, warned):
    warning = serve.exposure_warning(host, "ui")
    assert (warning is not None) == warned
    if warned:
        assert "without authentication" in warning and "ssh -L" in warning


@pytest.mark.parametrize("command, flag", [("ui", "--uri"), ("server", "--backend-store-uri")])
def test_ui_and_server_on_every_interface_warn_on_stderr(outputs, tmp_path, command, flag):
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n")
    # the store check fails right after the warning, so no server is started
    proc = run_cli(command, "--host", "0.0.0.0", "--port", "5987", flag, sqlite_uri(notes),
                   outputs=outputs, timeout=60)
    assert f"gdexp {command}: warning: serving the store on every interface without " \
           "authentication" in proc.stderr
    assert_one_line_error(proc, "not an sqlite database")
    quiet = run_cli(command, "--port", "5987", flag, sqlite_uri(notes), outputs=outputs,
                    timeout=60)
    assert "warning" not in quiet.stderr and quiet.returncode == 2


def test_a_folder_used_again_holds_the_new_run_and_the_store_keeps_the_old(outputs, tmp_path):
    from mlflow import MlflowClient
    import numpy as np

    single, sweep = tmp_path / "single", tmp_path / "sweep"
    for steps in (10, 20):  # the same hydra.run.dir twice
        run_cli("run", f"hydra.run.dir={single}", f"stop.max_steps={steps}",
                "tracking.plots=false", outputs=outputs, check=True)
    (sweep / "0" / "artifacts.partial").mkdir(parents=True)  # left by a killed run
    (sweep / "0" / "artifacts.partial" / "stale.txt").write_text("not this run's")
    for rates in ("0.01,0.1", "0.03,0.3"):  # the same hydra.sweep.dir twice
        run_cli("run", "-m", f"optimizer.lr={rates}", f"hydra.sweep.dir={sweep}",
                "tracking.plots=false", outputs=outputs, check=True)
    for folder in (single, sweep / "0", sweep / "1"):
        assert sorted(p.name for p in folder.glob("artifacts*")) == ["artifacts"]
    assert not (sweep / "0" / "artifacts" / "stale.txt").exists()
    assert "optimizer.lr=0.03" in (sweep / "0" / "artifacts" / "overrides.yaml").read_text()
    with np.load(single / "artifacts" / "trace.npz") as trace:
        assert trace["steps"][-1] == 20
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2 + 2 * 3
    for r in runs:  # each run's own artifacts, the replaced ones included
        if r.data.tags.get("gdexp.sweep") == "true":
            continue
        local = client.download_artifacts(r.info.run_id, "trace.npz", str(tmp_path / r.info.run_id))
        with np.load(local) as trace:
            last, lrs = int(trace["steps"][-1]), trace["lr"]
        budget, lr = int(r.data.params["stop.max_steps"]), float(r.data.params["optimizer.lr"])
        assert np.all(lrs == lr) and (last == budget if budget < 1000 else last <= budget)
