"""Processes and signals, as a user meets them: Ctrl-C / SIGTERM, kill -9, shared sweep folders,
bad sweep values. Real subprocesses, real signals, real sqlite stores."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdexp import processes

from .conftest import run_cli

# A descent that never ends on its own (f stays far from any tolerance).
FOREVER = ("stop.max_steps=100000000", "stop.grad_tol=0", "stop.step_tol=0", "stop.value_tol=0",
           "tracking.plots=false", "diagnostics.enabled=false")
RATES = "optimizer.lr=1e-9,2e-9,3e-9"


def runs(outputs: Path) -> list[tuple[str, str]]:
    """(name, status) of every run in the store, oldest first; [] before the store exists."""
    db = outputs / "mlflow.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("select name, status from runs order by start_time").fetchall()
    except sqlite3.Error:  # tables not created yet
        return []


def tags(outputs: Path, key: str) -> list[str]:
    with sqlite3.connect(f"file:{outputs / 'mlflow.db'}?mode=ro", uri=True) as con:
        return [v for (v,) in con.execute("select value from tags where key = ?", (key,))]


def descendants(pid: int) -> list[tuple[int, int]]:
    return processes.descendants(pid)


def alive(procs) -> list[int]:
    return [pid for pid, start in procs if processes._alive(pid, start)]


class Launched:
    """`gdexp run ARGS` in its own session (so that a whole-group signal is a terminal's Ctrl-C)."""

    def __init__(self, outputs: Path, *args: str) -> None:
        self.outputs = outputs
        self.err = open(outputs.parent / "stderr.txt", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "gdexp", "run", *args],
                                     env={**os.environ, "GDEXP_OUTPUTS": str(outputs)},
                                     stdout=subprocess.DEVNULL, stderr=self.err,
                                     start_new_session=True)

    def wait_running(self, jobs: int, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.stderr()
            if sum(1 for name, status in runs(self.outputs)
                   if status == "RUNNING" and not name.startswith("sweep-")) >= jobs:
                return
            time.sleep(0.3)
        raise AssertionError(f"{jobs} running jobs not seen:\n{self.stderr()}")

    def stderr(self) -> str:
        self.err.flush()
        return (self.outputs.parent / "stderr.txt").read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def interrupt_and_check(outputs: Path, launched: Launched, jobs: int, sig: int, group: bool,
                        sweep: bool) -> None:
    """Signal it once everything runs; then: exit 128 + sig within seconds, one line on
    stderr, no process left, every run that did not finish (and the sweep run) KILLED."""
    try:
        launched.wait_running(jobs)
        workers = descendants(launched.proc.pid)
        before = len(launched.stderr().splitlines())
        t0 = time.time()
        if group:
            os.killpg(launched.proc.pid, sig)
        else:
            launched.proc.send_signal(sig)
        rc = launched.proc.wait(timeout=60)
        seconds = time.time() - t0
    finally:
        launched.kill()
    print(f"exit {rc} {seconds:.1f} s after {signal.Signals(sig).name}; workers {workers}")
    assert rc == 128 + sig
    assert seconds < 15
    assert alive(workers) == []
    new = [line for line in launched.stderr().splitlines()[before:] if " INFO " not in line]
    ours = [line for line in new if line.startswith("gdexp: ")]
    assert ours == [f"gdexp: interrupted by {'SIGTERM' if sig == signal.SIGTERM else 'Ctrl-C'}"
                    "; every unfinished run ended KILLED"], new
    assert new == ours, new
    found = runs(outputs)
    assert sum(1 for name, _ in found if name.startswith("sweep-")) == (1 if sweep else 0)
    assert {status for _, status in found} == {"KILLED"}, found
    assert len(found) == jobs + (1 if sweep else 0)


def test_ctrl_c_on_a_single_run(outputs):
    launched = Launched(outputs, *FOREVER, "optimizer.lr=1e-9")
    interrupt_and_check(outputs, launched, 1, signal.SIGINT, group=True, sweep=False)


def test_sigterm_on_a_basic_sweep_ends_it_killed(outputs):
    launched = Launched(outputs, "-m", "hydra/launcher=basic", RATES, *FOREVER)
    interrupt_and_check(outputs, launched, 1, signal.SIGTERM, group=False, sweep=True)


def test_sigterm_on_a_batched_sweep_ends_its_whole_group_killed(outputs):
    # the default launcher opens every run of a group before the one descent
    launched = Launched(outputs, "-m", RATES, *FOREVER)
    interrupt_and_check(outputs, launched, len(RATES.split(",")), signal.SIGTERM, group=False,
                        sweep=True)


@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["kill-pid", "ctrl-c"])
def test_signals_stop_a_joblib_sweep_and_its_workers(outputs, sig, group):
    launched = Launched(outputs, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                        RATES, *FOREVER)
    interrupt_and_check(outputs, launched, 2, sig, group=group, sweep=True)


@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["kill-pid", "ctrl-c"])
def test_signals_stop_a_submitit_sweep_and_its_job_processes(outputs, sig, group):
    launched = Launched(outputs, "-m", "hydra/launcher=submitit_local", "optimizer.lr=1e-9,2e-9",
                        *FOREVER)
    # Ctrl-C in a terminal reaches the whole process group; submitit's local controller
    # starts with it blocked, so gdexp's line is all that is printed
    interrupt_and_check(outputs, launched, 2, sig, group=group, sweep=True)


WORKER_SIGNAL = """
import os, signal, weakref
from gdexp import processes

class Thing:
    pass

def finalizer(_):  # the signal lands while Python runs a weakref callback
    os.kill(os.getpid(), signal.SIGTERM)
    sum(range(1000))

with processes.job_signals():  # a worker's job: SIGTERM raises Interrupted
    thing = Thing()
    ref = weakref.ref(thing, finalizer)
    del thing  # the callback runs here and swallows the Interrupted it raised
    print("swallowed", flush=True)
    processes.check()
print("not raised again", flush=True)
"""


def test_a_signal_swallowed_in_a_finalizer_is_raised_again_without_noise():
    """A worker process (not the launcher): the Interrupted raised inside a weakref callback
    is swallowed by Python; it prints nothing and the next check() raises it."""
    env = {**os.environ, processes.LAUNCHER_ENV: "1"}  # some other process launched this one
    proc = subprocess.run([sys.executable, "-c", WORKER_SIGNAL], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout == "swallowed\n", (proc.stdout, proc.stderr)
    assert "Interrupted: SIGTERM" in proc.stderr  # raised by check(), uncaught
    assert "Exception ignored" not in proc.stderr, proc.stderr


DEFERRED_SIGNAL = """
import os, signal
from gdexp import processes

processes.install()
try:
    with processes.deferred():  # a store call: the signal waits until it is over
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(100000))
        print("the call ran to its end", flush=True)
    print("not reached", flush=True)
except processes.Interrupted as e:
    print("then", e.signum, flush=True)
"""


def test_a_signal_during_a_store_call_is_raised_when_the_call_is_over():
    """An interrupted store call can leave its connection inside a transaction, whose lock
    stalls the clean-up's own writes (seen: a batched sweep's KILLED statuses took 20 s
    each); so a store call finishes first (tracking.Deferring), then the signal is raised."""
    proc = subprocess.run([sys.executable, "-c", DEFERRED_SIGNAL], capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout == f"the call ran to its end\nthen {int(signal.SIGTERM)}\n", \
        (proc.stdout, proc.stderr)


def test_store_calls_are_deferring(tmp_path, monkeypatch):
    from gdexp import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    assert isinstance(client, tracking.Deferring)
    seen = []
    real = processes.deferred

    def spy():
        seen.append(True)
        return real()

    monkeypatch.setattr(processes, "deferred", spy)
    client.search_experiments()
    assert seen == [True]


def test_a_run_whose_process_was_killed_is_failed_by_the_next_command(outputs):
    launched = Launched(outputs, *FOREVER, "optimizer.lr=1e-9")
    try:
        launched.wait_running(1)
        pid = launched.proc.pid
        assert tags(outputs, processes.PID_TAG) == [str(pid)]
        assert tags(outputs, processes.HOST_TAG) == [os.uname().nodename]
        os.kill(pid, signal.SIGKILL)
        launched.proc.wait(timeout=30)
    finally:
        launched.kill()
    assert runs(outputs) == [("quadratic-gd-lr1e-09-s0", "RUNNING")]
    proc = run_cli("report", "gdexp", outputs=outputs)
    assert proc.returncode == 0, proc.stderr
    assert "1 run(s) whose process is gone marked FAILED" in proc.stderr
    assert runs(outputs) == [("quadratic-gd-lr1e-09-s0", "FAILED")]
    assert tags(outputs, processes.FAILURE_TAG) == [
        f"process {pid} on {os.uname().nodename} ended without closing the run"]
    assert " running " not in proc.stdout and "failed" in proc.stdout


def test_which_processes_count_as_gone():
    me = processes.identity()
    now = time.time()
    assert processes.gone(me) is None  # this very process
    assert processes.gone({}) is None  # a run that does not say who holds it
    # same machine: a pid that cannot exist, or one that started at another time
    assert "ended without closing" in processes.gone({**me, processes.PID_TAG: str(2 ** 22 + 7)})
    reused = {**me, processes.START_TAG: str(int(me[processes.START_TAG]) + 1)}
    assert "pid reused" in processes.gone(reused)
    # another machine: only the heartbeat can tell
    other = {**me, processes.MACHINE_TAG: "elsewhere", processes.HOST_TAG: "node7"}
    fresh = {**other, processes.HEARTBEAT_TAG: str(int(now) - 60)}
    stale = {**other, processes.HEARTBEAT_TAG: str(int(now - processes.HEARTBEAT_TIMEOUT) - 60)}
    assert processes.gone(fresh, now) is None
    assert "no heartbeat from process" in processes.gone(stale, now)
    assert "node7" in processes.gone(stale, now)


def test_heartbeat_is_refreshed_while_a_run_is_open(monkeypatch):
    monkeypatch.setattr(processes, "HEARTBEAT_EVERY", 0.05)
    beats = processes._Heartbeats()
    seen = []
    beats.add("r", lambda: seen.append(time.time()))
    time.sleep(0.5)
    beats.remove("r")
    count = len(seen)
    time.sleep(0.3)
    assert count >= 3 and len(seen) == count


def test_a_sweep_folder_in_use_by_a_live_sweep_is_refused(outputs, tmp_path):
    folder = tmp_path / "same"
    first = Launched(outputs, "-m", "hydra/launcher=basic", "optimizer.lr=1e-9,2e-9", *FOREVER,
                     f"hydra.sweep.dir={folder}")
    try:
        first.wait_running(1)
        second = run_cli("run", "-m", "optimizer.lr=0.1,0.2", "stop.max_steps=5",
                         f"hydra.sweep.dir={folder}", outputs=outputs)
        assert second.returncode == 2, second.stderr
        lines = [line for line in second.stderr.splitlines() if " INFO " not in line]
        assert len(lines) == 1 and lines[0].startswith(
            f"gdexp: error: hydra.sweep.dir: expected a folder no running sweep uses, got "
            f"'{folder}' (sweep run "), lines
        # nothing of the refused sweep reached the store
        assert [status for name, status in runs(outputs)] == ["RUNNING", "RUNNING"]
    finally:
        first.kill()
    # once that sweep is gone (even by kill -9) the folder can be used again
    again = run_cli("run", "-m", "optimizer.lr=0.1,0.2", "stop.max_steps=5", "tracking.plots=false",
                    f"hydra.sweep.dir={folder}", outputs=outputs)
    assert again.returncode == 0, again.stderr
    assert "run(s) whose process is gone marked FAILED" in again.stderr


@pytest.mark.parametrize("args,message", [
    (("optimizer.lr=0.1,-1",), "optimizer.lr: expected a number > 0, got -1"),
    (("optimizer.lr=0.1,0.2", "init.x0=[1,1],[1,2,3]"),
     "init.x0: has length 3 but objective.dim is 2 (got [1, 2, 3])"),
    (("objective=quadratic,nosuch",),
     "objective: expected one of " + ", ".join(sorted(
         p.stem for p in (Path(__file__).parents[1] / "conf" / "objective").glob("*.yaml")))
     + ", got 'nosuch'"),
    (("seed=range(0,3,0)",), "seed: range() arg 3 must not be zero, got 'seed=range(0,3,0)'"),
    (("optimizer.lr=range(0)",),
     "the sweep has no jobs: a sweep override expands to no values (e.g. range(0))"),
    (("optimizer.lr=0.1,0.2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"),
     "hydra.launcher.n_jobs: expected a non-zero integer (-1: every core), got 0"),
    (("optimizer.lr=0.1,0.2", "hydra.launcher.max_group_jobs=0"),
     "hydra.launcher.max_group_jobs: expected an integer >= 1, got 0"),
], ids=["lr", "x0", "group", "range-step", "no-jobs", "n_jobs", "group-cap"])
def test_a_bad_sweep_value_stops_the_sweep_before_anything_runs(outputs, args, message):
    proc = run_cli("run", "-m", *args, "stop.max_steps=5", outputs=outputs)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"gdexp: error: {message}"]
    assert "job 1" not in proc.stdout
    assert runs(outputs) == []  # no sweep run, no job run


@pytest.mark.parametrize("launcher", ["batched", "joblib"])
def test_a_reader_that_goes_away_fails_nothing(outputs, launcher):
    # `gdexp run -m … | head -1`: the sweep's later lines have no reader; it still finishes
    # every run, quietly (a job of joblib prints in a worker process)
    proc = subprocess.Popen([sys.executable, "-m", "gdexp", "run", "-m",
                             f"hydra/launcher={launcher}", "optimizer.lr=0.1,0.2,0.3",
                             "stop.max_steps=20", "tracking.plots=false"],
                            env={**os.environ, "GDEXP_OUTPUTS": str(outputs)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("sweep ")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=240) == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err, err
    assert [status for name, status in runs(outputs)] == ["FINISHED"] * 4


def test_an_interrupted_sweep_removes_what_its_killed_workers_half_wrote(tmp_path, monkeypatch):
    # joblib kills its workers at once on Ctrl-C: the one writing its artifacts cannot clean
    # up; the sweep's process does, once they are stopped (cli.run, on KeyboardInterrupt)
    from gdexp import callbacks

    for job in ("0", "1"):
        (tmp_path / job / "artifacts.partial" / "plots").mkdir(parents=True)
        (tmp_path / job / "artifacts.partial" / "trace.npz").write_bytes(b"PK\x03")  # cut short
    (tmp_path / "1" / "artifacts").mkdir()  # a finished job keeps its artifacts
    (tmp_path / "1" / "artifacts" / "trace.npz").write_bytes(b"whole")
    monkeypatch.setitem(callbacks._launch, "sweep_dir", tmp_path)
    callbacks.clear_half_written()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "0", "1", "1/artifacts", "1/artifacts/trace.npz"]


def test_collection_paused_resumes_as_it_was_and_freezes_only_for_the_command_line(
        monkeypatch):
    import gc

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with processes.collection_paused():
        assert not gc.isenabled()
        kept = [[i] for i in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # a library's process: no freeze
    gc.disable()
    try:
        with processes.collection_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
    monkeypatch.setitem(processes._FREEZE, "on", True)
    try:
        with processes.collection_paused():
            more = [[i] for i in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(kept) + len(more)
    finally:
        gc.unfreeze()


def test_the_command_line_freezes_what_its_imports_built():
    """`gdexp` (cli.main) freezes once mlflow is imported and the store open: the sweep's
    later full collections skip those objects."""
    code = ("import gc, sys, tempfile\n"
            "from gdexp import cli, processes, tracking\n"
            "assert gc.get_freeze_count() == 0\n"
            "processes.freeze_after_imports()\n"
            "tracking.client(f'sqlite:///{tempfile.mkdtemp()}/m.db')\n"
            "assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()\n"
            "assert gc.isenabled()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_command_line_asks_for_it(tmp_path):
    code = ("import gc, sys\n"
            "from gdexp import cli\n"
            "try:\n"
            "    cli.main(['run', 'stop.max_steps=2', 'tracking.plots=false'])\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GDEXP_OUTPUTS": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
