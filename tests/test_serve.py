"""`gdexp ui` and `gdexp server` as a user runs them: real servers, a browser, clean stops."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gdexp.serve import group_members

from .conftest import run_cli

CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT = 240  # seconds until the printed link; a loaded 2-core machine needs ~20-40 s
STOP_TIMEOUT = 60
TABLE_LINK = re.compile(
    r"runs table: +(http://\S+/#/experiments/(\d+)/runs)\?viewStateShareKey=([\w-]+)$", re.M)
SWEEP = ("quadratic-gd-lr0.05-s0", "quadratic-gd-lr0.1-s0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing answers on the port and a server could bind it again (SO_REUSEADDR, as uvicorn)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Live processes below ``pid`` (Linux /proc), so none can outlive a test."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Served:
    """`gdexp ui|server ARGS` in a subprocess, its output in a file; always cleaned up."""

    def __init__(self, args: list[str], outputs: Path, log: Path):
        self.log = log
        self.handle = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gdexp", *args], stdout=self.handle,
            stderr=subprocess.STDOUT, env={**os.environ, "GDEXP_OUTPUTS": str(outputs)},
            start_new_session=True)
        self.tree: list[int] = []

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: re.Pattern, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = pattern.search(self.output())
            if match:
                self.tree = descendants(self.proc.pid)
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        raise AssertionError(f"no {pattern.pattern!r} within {timeout} s "
                             f"(exit {self.proc.poll()}):\n{self.output()}")

    def server_pgid(self) -> int:
        """The `mlflow server` child leads its own process group."""
        for pid in self.tree:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mlflow" in cmd and b"server" in cmd:
                return os.getpgid(pid)
        raise AssertionError(f"no mlflow server below {self.proc.pid}: {self.tree}")

    def stop(self, sig: int) -> float:
        """Send ``sig``; the seconds until gdexp exited."""
        began = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(STOP_TIMEOUT)
        return time.monotonic() - began

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self.tree + descendants(self.proc.pid):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.handle.close()


def chromium(url: str, tmp_path: Path, *, budget_ms: int, screenshot: Path | None = None) -> str:
    """Headless Chromium (flags from FACTS.md): the DOM after ``budget_ms`` of virtual time."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    mode = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,900",
         f"--virtual-time-budget={budget_ms}", *mode, url],
        capture_output=True, text=True, timeout=180)
    return proc.stdout


def dom_with(url: str, tmp_path: Path, needles: tuple[str, ...]) -> str:
    """The rendered DOM, retried with more virtual time while a needle is missing."""
    dom = ""
    for budget in (15000, 30000, 60000):
        dom = chromium(url, tmp_path, budget_ms=budget)
        if all(n in dom for n in needles):
            break
    return dom


def search_runs(base: str, experiment_id: str) -> list[dict]:
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search", method="POST",
        data=json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response).get("runs", [])


def experiment_tags(base: str, experiment_id: str) -> dict:
    url = f"{base}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    with urllib.request.urlopen(url, timeout=30) as response:
        tags = json.load(response)["experiment"].get("tags", [])
    return {t["key"]: t["value"] for t in tags}


def tag(run: dict, key: str):
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}.get(key)


@pytest.mark.slow
def test_ui_shows_a_sweep_in_the_runs_table_and_stops_on_ctrl_c(outputs, tmp_path):
    run_cli("run", "-m", "optimizer.lr=0.05,0.1", "tracking.plots=false", outputs=outputs,
            check=True)
    port = free_port()
    ui = Served(["ui", "--port", str(port)], outputs, tmp_path / "ui.out")
    try:
        began = time.monotonic()
        found = ui.wait_for(TABLE_LINK)
        link, experiment_id, key = found.groups()
        print(f"ui answered after {time.monotonic() - began:.1f} s")
        view = found.group(0).split()[-1]
        base = f"http://127.0.0.1:{port}"
        assert link == f"{base}/#/experiments/{experiment_id}/runs"

        runs = search_runs(base, experiment_id)
        names = {r["info"]["run_name"]: r for r in runs}
        assert set(SWEEP) <= set(names), sorted(names)
        parents = [r for r in runs if tag(r, "gdexp.sweep") == "true"]
        assert len(parents) == 1 and len(runs) == 3
        parent_id = parents[0]["info"]["run_id"]
        assert all(tag(names[n], "mlflow.parentRunId") == parent_id for n in SWEEP)
        assert all(names[n]["info"]["status"] == "FINISHED" for n in SWEEP)

        if CHROMIUM.exists():
            # gdexp's view (an experiment tag the UI loads by its key): every run, best
            # first, with the outcome columns; the sweep's runs are not folded away
            state = json.loads(experiment_tags(base, experiment_id)[
                f"mlflow.sharedViewState.{key}"])
            assert state["orderByKey"] == "metrics.`final_loss`"
            dom = dom_with(view, tmp_path, SWEEP)
            for name in SWEEP:
                assert name in dom, f"{name} missing from the rendered runs table"
            assert "final_loss" in dom
            shot = tmp_path / "runs.png"
            chromium(view, tmp_path, budget_ms=15000, screenshot=shot)
            assert shot.exists() and shot.stat().st_size > 10_000
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            print("browser check skipped: /usr/bin/chromium missing (apt-get install chromium)")

        pgid = ui.server_pgid()
        assert len(group_members(pgid)) >= 2  # mlflow server and its uvicorn worker
        seconds = ui.stop(signal.SIGINT)
        print(f"ui stopped {seconds:.1f} s after SIGINT")
        out = ui.output()
        assert ui.proc.returncode == 0, out
        assert "Traceback" not in out and "stopped after" in out
        assert group_members(pgid) == [] and not any(map(alive, ui.tree))
        assert port_is_free(port)
    finally:
        ui.cleanup()
    if not CHROMIUM.exists():
        pytest.skip("the browser part needs /usr/bin/chromium (Debian package chromium)")


@pytest.mark.slow
def test_server_takes_a_run_with_artifacts_and_stops_on_sigterm(outputs, tmp_path):
    port = free_port()
    server = Served(["server", "--port", str(port)], outputs, tmp_path / "server.out")
    uri = f"http://127.0.0.1:{port}"
    try:
        began = time.monotonic()
        server.wait_for(re.compile(r"log runs into it: +(.*)$", re.M))
        print(f"server answered after {time.monotonic() - began:.1f} s")
        assert f"tracking.uri={uri}" in server.output()

        proc = run_cli("run", "tracking=server", f"tracking.uri={uri}", "optimizer.lr=0.1",
                       "tracking.plots=false", outputs=outputs, check=True)
        # gdexp's result lines link the run; MLflow's own "View run … at:" lines stay out
        assert "View run" not in proc.stdout and "View experiment" not in proc.stdout
        assert f"  run:  {uri}/#/experiments/" in proc.stdout
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("gdexp")
        (run,) = client.search_runs([exp.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.params["optimizer.lr"] == "0.1"
        assert run.data.params["tracking.uri"] == uri
        assert {"config.yaml", "trace.npz", "starts.csv"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)}
        # proxied by the server into outputs/mlartifacts, not written by the client elsewhere
        stored = outputs / "mlartifacts" / exp.experiment_id / run.info.run_id / "artifacts"
        assert (stored / "trace.npz").is_file()

        pgid = server.server_pgid()
        seconds = server.stop(signal.SIGTERM)
        print(f"server stopped {seconds:.1f} s after SIGTERM")
        assert server.proc.returncode == 0, server.output()
        assert "Traceback" not in server.output()
        assert group_members(pgid) == [] and port_is_free(port)
    finally:
        server.cleanup()
    # the store outlives the server: the run is in the sqlite db under outputs/
    local = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    assert local.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("command, args, message", [
    ("ui", ["--port", "70000"], "argument --port: expected an integer from 1 to 65535, "
                                "got '70000'"),
    ("server", ["--port", "http"], "argument --port: expected an integer from 1 to 65535, "
                                   "got 'http'"),
    ("server", ["--backend-store-uri", "file:///tmp/store"],
     "--backend-store-uri: unsupported scheme 'file' in 'file:///tmp/store'"),
    ("server", ["--backend-store-uri", "http://127.0.0.1:5000"],
     "--backend-store-uri: unsupported scheme 'http'"),
    ("ui", ["--uri", "mlruns"], "--uri: unsupported scheme '' in 'mlruns'"),
    ("ui", ["--uri", "sqlite:////nonexistent-gdexp/m.db"],
     "--uri: no MLflow store at '/nonexistent-gdexp/m.db'"),
    ("server", ["--workers", "0"], "argument --workers: expected an integer >= 1, got '0'"),
    # no --artifacts-destination given: the folder beside the store is the store's to blame
    ("server", ["--backend-store-uri", "sqlite:////proc/gdexp-m.db"],
     "--backend-store-uri: its artifacts folder beside the store: cannot create "
     "'/proc/mlartifacts'"),
    ("server", ["--artifacts-destination", "/proc/gdexp-artifacts"],
     "--artifacts-destination: cannot create '/proc/gdexp-artifacts'"),
])
def test_bad_arguments_give_one_line_errors(outputs, command, args, message):
    proc = run_cli(command, *args, outputs=outputs, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gdexp {command}: error: "), proc.stderr
    assert message in lines[0]
    assert not (outputs / "mlflow.db").exists()  # rejected before any store is touched
    assert not Path("/nonexistent-gdexp").exists()


@pytest.mark.parametrize("command", ["ui", "server"])
def test_a_taken_port_is_named_in_one_line(outputs, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(command, "--port", str(port), outputs=outputs, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"gdexp {command}: error: --port: port {port} is already in use on 127.0.0.1; stop "
        f"what runs there or choose another port (e.g. --port {port + 1})")


def test_a_database_without_its_driver_is_reported_with_the_password_hidden(outputs):
    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed: the URI below would be tried (for ~100 s of retries)")
    uri = "postgresql+pg8000://gd:s3cret@127.0.0.1:1/runs"
    proc = run_cli("server", "--backend-store-uri", uri, "--port", str(free_port()),
                   outputs=outputs, timeout=120)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line == ("gdexp server: error: --backend-store-uri: cannot open "
                    "'postgresql+pg8000://gd:***@127.0.0.1:1/runs' (ModuleNotFoundError: "
                    "No module named 'pg8000')")
    assert "s3cret" not in proc.stderr + proc.stdout
