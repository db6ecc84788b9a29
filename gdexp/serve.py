"""`gdexp ui` and `gdexp server`: an MLflow server on a gdexp store, with links and a clean stop."""
from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse, urlsplit

from .config import ConfigError, outputs_dir

DEFAULT_PORT = 5000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_EXPERIMENT = "gdexp"
BACKEND_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
START_TIMEOUT = 180.0   # seconds; a loaded 2-core machine needs 20-40 s
STOP_TIMEOUT = 30.0     # seconds before the server's process group is killed outright
POLL_INTERVAL = 0.25


class ServeError(Exception):
    """A one-line message for the user; the command exits with ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _Stop(BaseException):
    """Raised in the main thread on SIGINT or SIGTERM: time to shut the server down."""


def _raise_stop(signum, frame):
    raise _Stop()


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), for the gdexp error style."""

    def error(self, message):
        raise ServeError(message, code=2)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 65535, got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _parser(prog: str, description: str) -> _Parser:
    p = _Parser(prog=prog, description=description)
    p.add_argument("--port", type=_port, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"interface to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--workers", type=_workers, default=1,
                   help="uvicorn worker processes (default 1, which starts fastest)")
    p.add_argument("--timeout", type=_positive, default=START_TIMEOUT,
                   help=f"seconds to wait for the server to answer (default {START_TIMEOUT:g})")
    return p


def _hide_password(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def backend_uri(uri: Optional[str], arg: str, must_exist: bool = False) -> str:
    """An SQL store URI the server can open: the default store, an absolute sqlite, or a DB URL
    (``must_exist``: a sqlite file that is there already)."""
    if not uri:
        from . import tracking

        uri = tracking.resolve_uri(None)
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in BACKEND_SCHEMES:
        hint = ""
        if scheme in ("http", "https"):
            hint = (" (a tracking server, which serves its own UI: open it in a browser)"
                    if arg == "--uri" else " (a tracking server, not a database)")
        elif scheme == "file":
            hint = " (MLflow 3 rejects file stores unless MLFLOW_ALLOW_FILE_STORE=true)"
        elif not scheme:
            hint = " (expected a URI such as sqlite:////abs/path/mlflow.db)"
        raise ServeError(f"{arg}: unsupported scheme {scheme!r} in {_hide_password(uri)!r}"
                         f"{hint}; allowed: {', '.join(BACKEND_SCHEMES)}", code=2)
    if scheme == "sqlite" and uri != "sqlite:///:memory:":
        if not uri.startswith("sqlite:///"):
            raise ServeError(f"{arg}: expected sqlite:///PATH, got {uri!r}", code=2)
        # Relative sqlite paths follow the working directory (as in MLflow); the server runs
        # elsewhere, so pin the path down here.
        path = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        if must_exist and not path.is_file():
            raise ServeError(f"{arg}: no MLflow store at {str(path)!r}; give the mlflow.db a "
                             "run wrote (without --uri: the one under outputs/)", code=2)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ServeError(f"{arg}: cannot create {str(path.parent)!r} ({e.strerror})")
        uri = f"sqlite:///{path}"
    return uri


def artifacts_dir(uri: str, destination: Optional[str] = None,
                  arg: str = "--backend-store-uri") -> str:
    """Where the server keeps artifacts: beside a sqlite db (as runs do), else under outputs/.
    A folder that cannot be made is blamed on what named it: ``--artifacts-destination``, or
    the store's ``arg``, beside which it goes."""
    if destination and "://" in destination:
        return destination  # s3://..., gs://...: the server's business
    if destination:
        path = Path(destination).expanduser().resolve()
    elif uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        path = Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
    else:
        path = outputs_dir() / "mlartifacts"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        where = ("--artifacts-destination" if destination else
                 f"{arg}: its artifacts folder beside the store")
        raise ServeError(f"{where}: cannot create {str(path)!r} ({e.strerror})",
                         code=2) from None
    return str(path)


def prepare_store(uri: str, arg: str) -> None:
    """Create and migrate the db here, once: the server's workers would race on it (FACTS)."""
    from . import tracking

    try:
        tracking.client(uri).search_experiments(max_results=1)
    except ConfigError as e:  # one line already (tracking.StoreError)
        raise ServeError(str(e).replace("tracking.uri:", f"{arg}:", 1),
                         getattr(e, "code", 2)) from None
    except Exception as e:  # driver missing, database unreachable, bad credentials, ...
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ServeError(f"{arg}: cannot open {_hide_password(uri)!r} ({type(e).__name__}: "
                         f"{detail})") from None


def url_host(host: str) -> str:
    """The host to put in a link: a wildcard bind is reached through the loopback address."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return True  # cannot be bound either: check_port reports it
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                               for info in infos)


def exposure_warning(host: str, command: str) -> Optional[str]:
    """The warning for a bind beyond this machine: MLflow serves the store without login."""
    if is_loopback(host):
        return None
    where = "every interface" if host in ("0.0.0.0", "::", "") else f"{host!r}"
    return (f"gdexp {command}: warning: serving the store on {where} without authentication: "
            "anyone who can reach this port can read, change and delete every run; prefer "
            "the default 127.0.0.1 with an SSH tunnel (ssh -L PORT:127.0.0.1:PORT HOST), or "
            "MLflow's own auth (mlflow server --app-name basic-auth) and --allowed-hosts")


def check_port(host: str, port: int) -> None:
    """Fail with one line if host:port cannot be bound (uvicorn binds with SO_REUSEADDR too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except socket.gaierror as e:
            raise ServeError(f"--host: cannot resolve {host!r} ({e.strerror})", code=2) from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServeError(f"--port: port {port} is already in use on {host}; stop what "
                                 f"runs there or choose another port (e.g. --port {port + 1})"
                                 ) from None
            raise ServeError(f"--host/--port: cannot listen on {host}:{port} "
                             f"({e.strerror or e})") from None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group (from /proc where there is one)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to the server's whole process group, wait for all of it, then SIGKILL leftovers."""
    if os.name != "posix":
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    pgid = proc.pid  # the server leads its own session, hence its own group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)  # whatever ignored SIGTERM
    except ProcessLookupError:
        pass
    proc.wait()


def serve(mlflow_args: list[str], host: str, port: int, timeout: float, log_name: str,
          ready: Callable[[str], str], prepare: Callable[[], None] = lambda: None) -> int:
    """Start `mlflow server ARGS`, wait for /health, print ``ready(url)``, run until a signal."""
    handlers = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    proc = None
    try:
        check_port(host, port)
        warning = exposure_warning(host, log_name)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        prepare()
        log_path = outputs_dir() / "logs" / f"{log_name}-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # The job runner (~10 huey processes) serves GenAI features only; without it the
        # server starts about twice as fast and stops sooner.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        cmd = [sys.executable, "-m", "mlflow", "server", *mlflow_args,
               "--host", host, "--port", str(port)]
        url = f"http://{url_host(host)}:{port}"
        started = time.monotonic()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=log_path.parent, env=env,
                                    start_new_session=os.name == "posix")
        print(f"starting the MLflow server on {url} (log: {log_path}) ...", flush=True)
        while not _healthy(url):
            if proc.poll() is not None:
                raise ServeError(f"the MLflow server exited while starting (code "
                                 f"{proc.returncode}): {_last_line(log_path)} (log: {log_path})")
            if time.monotonic() - started > timeout:
                raise ServeError(f"the MLflow server did not answer on {url} within "
                                 f"{timeout:g} s (see --timeout; log: {log_path})")
            time.sleep(POLL_INTERVAL)
        print(f"up after {time.monotonic() - started:.1f} s", flush=True)
        print(ready(url), flush=True)
        print("press Ctrl-C to stop", flush=True)
        code = proc.wait()
        raise ServeError(f"the MLflow server stopped by itself (code {code}): "
                         f"{_last_line(log_path)} (log: {log_path})")
    except _Stop:
        if proc is not None and proc.poll() is None:
            print("stopping the MLflow server ...", flush=True)
            began = time.monotonic()
            _stop_patiently(proc)
            print(f"stopped after {time.monotonic() - began:.1f} s", flush=True)
        return 0
    finally:
        if proc is not None and _running(proc):
            _stop_patiently(proc)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _running(proc: subprocess.Popen) -> bool:
    """The server, or anything it spawned into its group (e.g. a job runner), is still up."""
    if proc.poll() is None:
        return True
    return os.name == "posix" and bool(group_members(proc.pid))


def _stop_patiently(proc: subprocess.Popen) -> None:
    """stop(), where a second Ctrl-C (or SIGTERM) kills the server's group at once."""
    def hurry(signum, frame):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            proc.kill()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, hurry)
    stop(proc)


def _run(command: str, argv: list[str], body: Callable[[list[str]], int]) -> int:
    try:
        return body(argv)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except ServeError as e:
        print(f"gdexp {command}: error: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        print(f"gdexp {command}: error: {e}", file=sys.stderr)
        return 2


def _ui(argv: list[str]) -> int:
    p = _parser("gdexp ui", "Browse the runs in the MLflow UI (on the store runs write to).")
    p.add_argument("--uri", default=None,
                   help="SQL store to show (default: the sqlite store under outputs/)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                   help=f"experiment to link to (default {DEFAULT_EXPERIMENT!r}; created if "
                        "missing)")
    args = p.parse_args(argv)
    # a mistyped --uri would open the UI on a new, empty store
    uri = backend_uri(args.uri, "--uri", must_exist=bool(args.uri))
    found = {}

    def prepare():
        from . import tracking

        prepare_store(uri, "--uri")
        try:
            found["id"] = tracking.ensure_experiment(tracking.client(uri), args.experiment, uri)
        except ConfigError as e:
            raise ServeError(str(e).replace("tracking.experiment:", "--experiment:", 1), 2)
        tracking.reap_store(tracking.client(uri))

    def ready(url):
        from . import tracking

        view = tracking.ui_links(url, found["id"])
        return (f"MLflow UI on {_hide_password(uri)}, experiment {args.experiment!r}:\n"
                f"  runs table:       {view}\n"
                "  (status, final_loss, steps, lr, objective, ...; every run, best first)")

    mlflow_args = ["--backend-store-uri", uri, "--artifacts-destination", artifacts_dir(uri, arg="--uri"),
                   "--workers", str(args.workers)]
    return serve(mlflow_args, args.host, args.port, args.timeout, "ui", ready, prepare)


def _server(argv: list[str]) -> int:
    p = _parser("gdexp server", "An MLflow tracking server with an SQL store, for "
                                "`gdexp run tracking=server`.")
    p.add_argument("--backend-store-uri", default=None,
                   help="sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB (default: the "
                        "sqlite store under outputs/)")
    p.add_argument("--artifacts-destination", default=None,
                   help="folder (or s3://... URI) the server stores uploaded artifacts in "
                        "(default: mlartifacts/ beside a sqlite db, else outputs/mlartifacts)")
    p.add_argument("--allowed-hosts", default=None,
                   help="Host headers to accept when serving beyond localhost (MLflow option)")
    p.add_argument("--cors-allowed-origins", default=None,
                   help="browser origins allowed to call the API (MLflow option)")
    args = p.parse_args(argv)
    uri = backend_uri(args.backend_store_uri, "--backend-store-uri")
    artifacts = artifacts_dir(uri, args.artifacts_destination)
    mlflow_args = ["--backend-store-uri", uri, "--artifacts-destination", artifacts,
                   "--workers", str(args.workers)]
    for flag, value in (("--allowed-hosts", args.allowed_hosts),
                        ("--cors-allowed-origins", args.cors_allowed_origins)):
        if value:
            mlflow_args += [flag, value]

    found = {}

    def prepare():
        from . import tracking

        prepare_store(uri, "--backend-store-uri")
        exp = tracking.client(uri).get_experiment_by_name(DEFAULT_EXPERIMENT)
        found["table"] = (f"#/experiments/{exp.experiment_id}/runs" if exp is not None
                          else "#/experiments")

    def ready(url):
        use = ("gdexp run tracking=server" if url == f"http://127.0.0.1:{DEFAULT_PORT}"
               else f"gdexp run tracking=server tracking.uri={url}")
        return (f"MLflow tracking server on {url} (store {_hide_password(uri)}, "
                f"artifacts {artifacts})\n"
                f"  log runs into it:  {use}\n"
                f"  runs table:        {url}/{found['table']}")

    return serve(mlflow_args, args.host, args.port, args.timeout, "server", ready, prepare)


def ui(argv: list[str]) -> int:
    """`gdexp ui [--port 5000] [--host 127.0.0.1] [--uri URI] [--experiment NAME]`."""
    return _run("ui", argv, _ui)


def server(argv: list[str]) -> int:
    """`gdexp server [--port 5000] [--host 127.0.0.1] [--backend-store-uri URI] [...]`."""
    return _run("server", argv, _server)
