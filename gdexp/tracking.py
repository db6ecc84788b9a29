"""MLflow at the edge: the only module that imports mlflow; a handful of store calls per run."""
from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import gc
import json
import math
import logging
import os
import re
import shutil
import signal
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

import numpy as np

from . import processes
from .config import ConfigError, outputs_dir

SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
HTTP_SCHEMES = ("http", "https")
PARENT_TAG = "mlflow.parentRunId"
# On a sweep run, ``gdexp.reused.<run id>``: a FINISHED run with the same config that a job
# skipped (tracking.skip_finished) instead of re-running; it belongs to the sweep's results.
REUSED_TAG = "gdexp.reused"
UI_DEFAULT = "http://127.0.0.1:5000"

# Once mlflow is loaded, the final garbage collections over its ~3e5 objects (~2300 modules)
# add 1-2 s to every command's exit (and to every joblib worker's). Freezing them at exit
# skips that: the process is ending, and the operating system reclaims the memory anyway.
atexit.register(gc.freeze)

# MLflow 3 sends usage telemetry from a background thread (a DNS lookup and a request per
# run). Off unless the user asked for it; set before mlflow is imported (workers inherit it).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Through a tracking server, MLflow prints "View run … at: <url>" and "View experiment at"
# as each run ends: gdexp's own result lines already link every run, one line per job.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

# How long a process waits for another one creating or migrating the same sqlite store.
LOCK_TIMEOUT = 300.0
# MLflow retries opening a database 10 times with exponential backoff (~100 s in all), meant
# for a database server still starting; a file that is not a database fails the same way
# every time. Three attempts wait 0.4 s.
ENGINE_ATTEMPTS = 3


class StoreError(ConfigError):
    """The store (or the outputs folder) cannot be opened or written: one line for the user."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def default_uri() -> str:
    """The embedded store: an absolute sqlite URI under outputs/ (relative ones follow the cwd)."""
    return f"sqlite:///{outputs_dir() / 'mlflow.db'}"


def resolve_uri(uri: Optional[str]) -> str:
    return default_uri() if not uri else uri


def check_uri(uri: str) -> None:
    """Fail fast, before any run exists, on a URI that cannot work."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in HTTP_SCHEMES:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
                pass
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConfigError(f"tracking.uri: cannot reach {uri!r} ({reason}); start a server "
                              "with `gdexp server` or use tracking=local") from None
    elif scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):])
        if not uri.startswith("sqlite:////") and uri != "sqlite:///:memory:":
            raise ConfigError(f"tracking.uri: expected an absolute sqlite path "
                              f"(sqlite:////abs/path.db), got {uri!r}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"tracking.uri: cannot create {str(path.parent)!r} ({e.strerror})")
    elif scheme not in SQL_SCHEMES:
        raise ConfigError(f"tracking.uri: unsupported scheme {scheme!r} in {uri!r}; allowed: "
                          f"{', '.join(SQL_SCHEMES + HTTP_SCHEMES)}")


def artifact_location(uri: str) -> Optional[str]:
    """Artifacts of a sqlite store sit beside its db file; a server chooses its own."""
    if uri.startswith("sqlite:///"):
        # not urlparse(uri).path: for sqlite:////abs/db it keeps a leading '//', which
        # file:////abs then reads as a host name
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


@functools.lru_cache(maxsize=None)
def client(uri: str):
    """One MlflowClient per store and process: opening a sqlite store costs ~0.3 s, and a
    sweep's jobs in one process (basic launcher, joblib workers) share it.

    Every command opens its store here, so this is where a new store is created and an old
    one migrated: for sqlite under a file lock beside the db (``<db>.lock``). Without it,
    processes opening a missing db at once race in alembic's migrations, lose their runs and
    can leave the db unopenable for good. Errors become one-line StoreErrors."""
    # MLflow prints a progress bar per artifact download otherwise: noise in reports.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with processes.collection_paused():
        import mlflow.store.db.utils as db_utils  # 1.4 s import: only where tracking happens
        from mlflow.tracking import MlflowClient

        quiet_logging()
        db_utils.MAX_RETRY_COUNT = min(db_utils.MAX_RETRY_COUNT, ENGINE_ATTEMPTS)
        # It logs every database error with its traceback before raising it; the error
        # itself reaches the user as one line (explain), and its "Creating tables" notes
        # are noise.
        logging.getLogger(db_utils.__name__).setLevel(logging.CRITICAL)
        scheme = urlparse(uri).scheme.split("+")[0]
        if scheme == "sqlite" and uri != "sqlite:///:memory:":
            _open_sqlite(uri)
        elif scheme in SQL_SCHEMES:
            with _store_errors(uri):
                _sql_store(uri,
                           artifact_location(uri) or (outputs_dir() / "mlartifacts").as_uri())
        return Deferring(MlflowClient(tracking_uri=uri))


class Deferring:
    """An MlflowClient whose calls Ctrl-C and SIGTERM do not cut short: the signal is raised
    once the call is over (processes.deferred), so no store connection is left inside a
    transaction whose lock would stall the clean-up's own writes."""

    def __init__(self, mlflow_client) -> None:
        self.mlflow_client = mlflow_client

    def __getattr__(self, name: str):
        value = getattr(self.mlflow_client, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            with processes.deferred():
                return value(*args, **kwargs)
        return call


def writable_after_fork(uri: str) -> bool:
    """Whether a process forked from this one may write to the store at ``uri``: a database
    file or server, reached through an SQLAlchemy engine this process can hand over (not an
    in-memory database, which the child would copy; not an HTTP server, whose client is
    not known to survive a fork)."""
    if urlparse(uri).scheme.split("+")[0] not in SQL_SCHEMES or uri == "sqlite:///:memory:":
        return False
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return isinstance(getattr(SqlAlchemyStore, "_engine_map", None), dict)


def forked() -> None:
    """In a process just forked: the connections the store engines hold belong to the
    parent (SQLAlchemy's pattern for fork: a fresh pool, the inherited one left untouched),
    so that this process opens its own."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for engine in list(SqlAlchemyStore._engine_map.values()):
        engine.dispose(close=False)


def _sql_store(uri: str, artifact_root: str):
    """Create (tables, migrations, the Default experiment) or open the store itself. Created
    here the Default experiment keeps its artifacts beside the db, not in ``<cwd>/mlruns``,
    where MLflow's client would put them."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return SqlAlchemyStore(uri, artifact_root)


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///"):])


def _open_sqlite(uri: str) -> None:
    """Check the file with sqlite itself (fast, exact reasons), then create or migrate the
    store under the lock."""
    from filelock import FileLock, Timeout

    db = _sqlite_path(uri)
    if db.is_dir():
        raise StoreError(f"tracking.uri: {str(db)!r} is a directory, not an sqlite file", 2)
    if db.exists():
        _check_sqlite_file(db)
    lock_path = f"{db}.lock"
    lock = FileLock(lock_path, timeout=LOCK_TIMEOUT)
    try:
        # filelock retries a lock file it cannot create until the timeout: try once first
        os.close(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as e:
        if not db.is_file():
            raise StoreError(f"tracking.uri: cannot create the store in {str(db.parent)!r} "
                             f"({e.strerror or e})", 2) from None
        # A store on a read-only medium: nothing can migrate it, so no lock is needed.
        lock = None
    if lock is not None:
        try:
            lock.acquire()
        except Timeout:
            raise StoreError(f"tracking.uri: another process has held {lock_path} for "
                             f"{LOCK_TIMEOUT:g} s while creating the store; if none is "
                             "running, delete the lock file") from None
    try:
        created = not db.exists()
        stuck = None if created else _half_migrated(db)
        if stuck:
            raise StoreError(stuck)
        try:
            with _store_errors(uri):
                _sql_store(uri, artifact_location(uri))
        except StoreError:
            if created:  # e.g. a full disk: leave no half-made store behind
                for leftover in (db, Path(f"{db}-journal"), Path(f"{db}-wal")):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
            raise
    finally:
        if lock is not None:
            lock.release()


def _check_sqlite_file(db: Path) -> None:
    try:
        connection = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        what = "not an sqlite database" if "not a database" in str(e) else \
            f"damaged ({e}; e.g. truncated by a full disk or an interrupted copy)"
        raise StoreError(f"tracking.uri: {str(db)!r} is {what}; use another store file,"
                         " or move this one away to start a new store", 2) from None


def _half_migrated(db: Path) -> Optional[str]:
    """Why an existing sqlite store is stuck between schema versions, if it is."""
    try:
        connection = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        names = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        leftovers = [n for n in names if n.startswith("_alembic_tmp_")]
        versions = (connection.execute("SELECT version_num FROM alembic_version").fetchall()
                    if "alembic_version" in names else [])
        runs = (connection.execute("SELECT count(*) FROM runs").fetchone()[0]
                if "runs" in names else 0)
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    if leftovers:
        why = f"leftover migration table{'s' if len(leftovers) > 1 else ''} {', '.join(leftovers)}"
    elif names and len(versions) != 1:
        why = f"{len(versions)} schema versions recorded instead of 1"
    else:
        return None
    if runs == 0:
        fix = f"it holds no runs: delete {str(db)!r} and run again to create a new store"
    elif leftovers:
        fix = (f"it holds {runs} runs: back it up, drop the leftover tables (`sqlite3 {db} "
               f"'DROP TABLE {leftovers[0]}'`, ...), then run `mlflow db upgrade "
               f"sqlite:///{db}`")
    else:
        fix = (f"it holds {runs} runs: back it up, then record the schema version with "
               f"`alembic stamp` or start a new store with another tracking.uri")
    return (f"tracking.uri: the store {str(db)!r} was left half-migrated ({why}, from a crash "
            f"or from processes that created it at the same time); {fix}")


# A disk that cannot take what is written: full, read-only, over quota, not permitted.
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EACCES,
               errno.EPERM)
DRIVER_MODULES = ("sqlite3", "psycopg", "psycopg2", "pymysql")


def _first_line(e: BaseException) -> str:
    """The reason of a failure: the database driver's own message when there is one
    (MLflow and SQLAlchemy wrap it in several lines of SQL and advice)."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop(0)
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if type(x).__module__.split(".")[0] in DRIVER_MODULES and str(x).strip():
            return str(x).strip().splitlines()[0]
        todo += [getattr(x, "orig", None), x.__cause__, x.__context__]
    text = str(e).strip()
    found = re.search(r"\((?:%s)\.\w+\) ([^\n]+)" % "|".join(DRIVER_MODULES), text)
    if found:
        return found.group(1)
    lines = [line for line in text.splitlines() if not line.startswith("(raised as a result")]
    return lines[0] if lines else type(e).__name__


def _is_store_error(e: BaseException) -> bool:
    """An error raised by MLflow or its database layer (checked without importing them)."""
    return any(cls.__module__.split(".")[0] in ("mlflow", "sqlalchemy", "alembic", "sqlite3",
                                                "psycopg", "psycopg2", "pymysql")
               for cls in type(e).__mro__)


def explain(e: BaseException, uri: Optional[str] = None) -> Optional[str]:
    """One line for a failure of the store or of the disk, or None for anything else."""
    if isinstance(e, ConfigError):
        return str(e)
    if isinstance(e, OSError) and not _is_store_error(e):
        if e.errno not in DISK_ERRNOS:
            return None  # a missing file or a bug: not a disk that cannot take the results
        where = e.filename or outputs_dir()
        return f"cannot write {str(where)!r} ({e.strerror or _first_line(e)})"
    if _is_store_error(e):
        if uri and uri.startswith("sqlite:///"):
            stuck = _half_migrated(_sqlite_path(uri))
            if stuck:
                return stuck
        where = _sqlite_path(uri) if uri and uri.startswith("sqlite:///") else uri
        where = f" {str(where)!r}" if where else ""
        return f"tracking.uri: cannot use the store{where} ({_first_line(e)})"
    return None


@contextlib.contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """Store and disk failures inside the block become a one-line StoreError."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - anything else is re-raised below
        line = explain(e, uri)
        if line is None:
            raise
        raise StoreError(line) from None


def quiet_logging() -> None:
    """MLflow's and alembic's INFO lines (creating and migrating the db tables on a new
    store, ...) are about MLflow, not the run: only warnings and errors reach the console.
    Set after the import, which installs MLflow's own INFO-level handler."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ensure_experiment(mlflow_client, name: str, uri: str) -> str:
    """Create (or find) the experiment; creating the client's first call also migrates the db."""
    from mlflow.exceptions import MlflowException

    exp = mlflow_client.get_experiment_by_name(name)
    if exp is None:
        try:
            experiment_id = mlflow_client.create_experiment(
                name, artifact_location=artifact_location(uri))
            ensure_view(mlflow_client, experiment_id)
            return experiment_id
        except MlflowException as e:  # created meanwhile by a parallel job, or refused
            exp = mlflow_client.get_experiment_by_name(name)
            if exp is None:
                shown = name if len(name) <= 40 else f"{name[:20]}...{name[-10:]}"
                raise ConfigError(f"tracking.experiment: {shown!r} ({len(name)} characters) "
                                  f"refused by the store: {_first_line(e)}") from None
    if exp.lifecycle_stage != "active":
        raise ConfigError(f"tracking.experiment: {name!r} is deleted in {uri}; restore it or "
                          "choose another name")
    _warn_if_outside(exp, uri)
    ensure_view(mlflow_client, exp.experiment_id, tags=exp.tags)
    return exp.experiment_id


def _warn_if_outside(exp, uri: str) -> None:
    """Stores created by gdexp keep every experiment's artifacts beside the db; one created by
    MLflow itself put its Default experiment in ``<cwd>/mlruns``. Say so, once per process."""
    if not uri.startswith("sqlite:///") or urlparse(exp.artifact_location).scheme not in (
            "", "file"):
        return
    from mlflow.utils.file_utils import local_file_uri_to_path

    home = _sqlite_path(uri).parent
    where = Path(local_file_uri_to_path(exp.artifact_location))
    if where == home or home in where.parents or (exp.experiment_id, uri) in _warned:
        return
    _warned.add((exp.experiment_id, uri))
    print(f"gdexp: warning: experiment {exp.name!r} keeps its artifacts in {str(where)!r}, "
          f"outside the store's folder {str(home)!r} (it was not created by gdexp); choose "
          "another tracking.experiment to keep everything there", file=sys.stderr, flush=True)


_warned: set = set()


# SIGTERM takes Ctrl-C's path (processes.Interrupted is a KeyboardInterrupt).
Terminated = processes.Interrupted


@contextlib.contextmanager
def run_status(mlflow_client, run_id: str) -> Iterator[None]:
    """FINISHED on success, KILLED on Ctrl-C or SIGTERM, FAILED on any other exception; a
    heartbeat tag refreshed meanwhile tells other machines that the run's process lives."""
    main = threading.current_thread() is threading.main_thread()
    own = main and not processes.installed()
    previous = signal.signal(signal.SIGTERM, processes._on_signal) if own else None
    processes.heartbeats.add(run_id, lambda: mlflow_client.set_tag(
        run_id, processes.HEARTBEAT_TAG, str(int(time.time()))))
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        processes.heartbeats.remove(run_id)
        if own:
            signal.signal(signal.SIGTERM, previous)
        failing = sys.exc_info()[1] is not None
        try:
            mlflow_client.set_terminated(run_id, status)
        except Exception:  # noqa: BLE001 - a full or read-only store: report the first error
            if not failing:
                raise


def reap_dead_runs(mlflow_client, experiment_ids: list[str]) -> list[str]:
    """End FAILED every RUNNING run of these experiments whose process is provably gone
    (killed -9, out of memory, a power loss), with tag gdexp.failure saying why; returns
    their ids. One search per call; runs that do not name their process are left alone."""
    if not experiment_ids:
        return []
    runs = mlflow_client.search_runs(list(experiment_ids),
                                     filter_string="attributes.status = 'RUNNING'",
                                     max_results=1000)
    reaped = []
    for run in runs:
        reason = processes.gone(run.data.tags)
        if reason is None:
            continue
        mlflow_client.set_tag(run.info.run_id, processes.FAILURE_TAG, reason)
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        reaped.append(run.info.run_id)
    if reaped:
        print(f"gdexp: {len(reaped)} run(s) whose process is gone marked FAILED "
              f"(tag {processes.FAILURE_TAG} says why)", file=sys.stderr, flush=True)
    return reaped


def reap_store(mlflow_client) -> list[str]:
    """reap_dead_runs over every active experiment of the store."""
    ids = [e.experiment_id for e in mlflow_client.search_experiments(max_results=1000)]
    return reap_dead_runs(mlflow_client, ids)


def end_unfinished(mlflow_client, parent_id: str, status: str) -> int:
    """Give every still RUNNING child of a sweep run ``status``; how many there were."""
    parent = mlflow_client.get_run(parent_id)
    runs = mlflow_client.search_runs([parent.info.experiment_id],
                                     filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and "
                                                   "attributes.status = 'RUNNING'",
                                     max_results=10000)
    for run in runs:
        mlflow_client.set_terminated(run.info.run_id, status)
    return len(runs)


def param_value(value) -> str:
    """A param as it would be typed as an override: 0.001, [1.0, 10.0], null, true."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys to override-style strings: {'optimizer': {'lr': 0.1}} -> {'optimizer.lr': '0.1'}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = param_value(value)
    return flat


def thin_indices(m: int, cap: int) -> np.ndarray:
    """At most ``cap`` evenly spaced row indices of m rows, always keeping the first and last."""
    if m <= cap:
        return np.arange(m)
    return np.unique(np.linspace(0, m - 1, cap).round().astype(int))


def curve_metrics(name: str, steps: np.ndarray, values: np.ndarray, cap: int, timestamp: int):
    """Metric objects for one curve: thinned to ``cap`` points and cut at the first non-finite."""
    from mlflow.entities import Metric

    bad = ~np.isfinite(values)
    end = int(np.argmax(bad)) if bad.any() else len(values)
    idx = thin_indices(end, cap)
    return [Metric(name, float(values[i]), timestamp, int(steps[i])) for i in idx]


def scalar_metrics(values: dict[str, float], timestamp: int):
    """Metric objects for the finite entries of ``values`` (non-finite ones are left out)."""
    from mlflow.entities import Metric

    return [Metric(k, float(v), timestamp, 0) for k, v in values.items()
            if v is not None and math.isfinite(float(v))]


def log(mlflow_client, run_id: str, *, metrics=(), params: Optional[dict] = None,
        tags: Optional[dict] = None) -> None:
    """One batch (the client splits it into requests of at most 1000 metrics / 100 params)."""
    from mlflow.entities import Param, RunTag

    mlflow_client.log_batch(
        run_id, metrics=list(metrics),
        params=[Param(k, v[:6000]) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def log_artifacts(mlflow_client, run_id: str, folder: Path,
                  artifact_uri: Optional[str] = None) -> None:
    """Put the files of ``folder`` into the run's artifacts without a second copy on disk.

    With a local artifact store each file is hard-linked (one copy, two names: the run
    folder and the store; deleting either leaves the other), copied only across
    filesystems. The files land in a temporary folder renamed at the end, so a failure
    (a full disk) leaves no partial artifacts. A server gets them uploaded as usual."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    # ``artifact_uri``: the run's, as create_run returned it (saves a look-up per run)
    uri = artifact_uri or mlflow_client.get_run(run_id).info.artifact_uri
    if urlparse(uri).scheme not in ("", "file"):
        mlflow_client.log_artifacts(run_id, str(folder))
        return
    dest = Path(local_file_uri_to_path(uri))
    partial = dest.with_name(dest.name + ".partial")
    try:
        partial.mkdir(parents=True, exist_ok=True)
        for source in sorted(folder.rglob("*")):
            target = partial / source.relative_to(folder)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                try:
                    shutil.copyfile(source, target)
                except OSError as copy_error:  # shutil names the source; the target is full
                    raise OSError(copy_error.errno, copy_error.strerror, str(target)) from None
        if dest.exists():  # artifacts logged before (e.g. a report): merge, ours win
            shutil.copytree(partial, dest, dirs_exist_ok=True, copy_function=os.link)
            shutil.rmtree(partial)
        else:
            partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


# The runs table the printed links open: the UI (3.17) keeps a "shared view" as an
# experiment tag mlflow.sharedViewState.<key> (JSON) and loads it from
# #/experiments/<id>/runs?viewStateShareKey=<key>. Ours shows the outcome columns and sorts
# by final_loss: sorted by creation time (the UI's default) the table folds a sweep's runs
# under the sweep run, and its charts then show nothing.
VIEW_TAG = "mlflow.sharedViewState."
VIEW_KEY = "gdexp-runs"
VIEW_COLUMNS = ("tags.`status`", "metrics.`final_loss`", "metrics.`steps`",
                "params.`optimizer.lr`", "tags.`objective`", "tags.`stop_rule`", "tags.`basin`")


def view_key(sweep: Optional[str] = None) -> str:
    return VIEW_KEY if sweep is None else f"gdexp-sweep-{sweep}"


def view_state(sweep: Optional[str] = None) -> dict:
    """The runs table's state: every run (or one sweep's), best first, outcome columns."""
    return {"searchFilter": "" if sweep is None else f"tags.`{PARENT_TAG}` = '{sweep}'",
            "orderByKey": "metrics.`final_loss`", "orderByAsc": True,
            "selectedColumns": list(VIEW_COLUMNS), "runsHiddenMode": "SHOW_ALL"}


def ensure_view(mlflow_client, experiment_id: str, sweep: Optional[str] = None,
                tags: Optional[dict] = None) -> None:
    """Store the view ``ui_links`` points at (``tags``: the experiment's, when known, to
    skip the write if it is there already)."""
    key, value = VIEW_TAG + view_key(sweep), json.dumps(view_state(sweep))
    if tags is None or tags.get(key) != value:
        mlflow_client.set_experiment_tag(experiment_id, key, value)


def ui_links(uri: str, experiment_id: str, run_id: Optional[str] = None,
             sweep: Optional[str] = None) -> str:
    """A run's page; otherwise the runs table in gdexp's view (of one sweep's runs, or all)."""
    base = uri.rstrip("/") if urlparse(uri).scheme in HTTP_SCHEMES else UI_DEFAULT
    table = f"{base}/#/experiments/{experiment_id}/runs"
    if run_id is not None:
        return f"{table}/{run_id}"
    return f"{table}?viewStateShareKey={view_key(sweep)}"


def ui_hint(uri: str) -> str:
    """After a link into the local UI: how to start it, unless it already answers."""
    if urlparse(uri).scheme in HTTP_SCHEMES:
        return ""
    try:
        with urllib.request.urlopen(UI_DEFAULT + "/health", timeout=0.5):
            return ""
    except (urllib.error.URLError, OSError, ValueError):
        return "  (start the UI with `gdexp ui`)"


def find_finished(mlflow_client, experiment_id: str, chash: str) -> Optional[str]:
    """The id of a FINISHED run of this experiment with the same config hash, if any."""
    runs = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.config_hash = '{chash}' and "
                                       "attributes.status = 'FINISHED'", max_results=1)
    return runs[0].info.run_id if runs else None


def open_existing(uri: str, flag: str, hint: str = ""):
    """A client for a store that already exists, or a ConfigError naming ``flag``.

    Only looks: a missing sqlite file is an error here, never an empty new store.
    """
    if uri.startswith("sqlite:"):
        if not uri.startswith("sqlite:////"):
            raise ConfigError(f"{flag}: expected an absolute sqlite path "
                              f"(sqlite:////abs/path.db), got {uri!r}")
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise ConfigError(f"{flag}: no MLflow store at {str(db)!r}{hint}")
    else:
        try:
            check_uri(uri)
        except ConfigError as e:
            raise ConfigError(str(e).replace("tracking.uri:", f"{flag}:", 1)) from None
    try:
        return client(uri)
    except ConfigError as e:
        raise ConfigError(str(e).replace("tracking.uri:", f"{flag}:", 1)) from None
    except Exception as e:  # noqa: BLE001 - any driver error means the store cannot be opened
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{flag}: cannot open the store {uri} ({first})") from None


# Result lines show a run id's first 8 characters; that prefix finds the run again.
MIN_PREFIX = 8


def get_run(mlflow_client, run_id: str):
    """The run with this id, or with this unique prefix of at least MIN_PREFIX hex digits (as
    a sweep's result lines print them), or None when the store holds no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    if not (MIN_PREFIX <= len(run_id) < 32 and re.fullmatch(r"[0-9a-f]+", run_id)):
        return None
    found, token = [], None
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    while experiments:
        page = mlflow_client.search_runs(experiments, max_results=1000, page_token=token)
        found += [r for r in page if r.info.run_id.startswith(run_id)]
        token = page.token
        if not token:
            break
    if len(found) > 1:
        raise ConfigError(f"RUN_ID: {run_id!r} is the start of {len(found)} run ids "
                          f"({', '.join(r.info.run_id for r in found[:3])}, ...); give more of it")
    return found[0] if found else None


def child_run_ids(mlflow_client, experiment_id: str, parent_id: str) -> list[str]:
    runs = mlflow_client.search_runs([experiment_id],
                                     filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                     max_results=1000)
    return [r.info.run_id for r in runs]


def fetch_artifacts(mlflow_client, run_id: str, names: tuple, dst: Path) -> dict[str, Path]:
    """Download the top-level artifacts among ``names`` that the run has; {name: local path}."""
    present = {a.path for a in mlflow_client.list_artifacts(run_id) if not a.is_dir}
    return {name: Path(mlflow_client.download_artifacts(run_id, name, str(dst)))
            for name in names if name in present}


def metric_histories(mlflow_client, run) -> dict[str, list[tuple[int, float]]]:
    """Every logged metric of a run as its full (step, value) history."""
    return {key: [(m.step, m.value) for m in mlflow_client.get_metric_history(run.info.run_id,
                                                                             key)]
            for key in sorted(run.data.metrics)}


def log_dataset(mlflow_client, run_id: str, info: dict) -> None:
    """The data set a run trained on, as an MLflow dataset input (name, digest, shape as the
    profile); the run page's "Datasets used" shows it, and runs can be searched by it."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = ("sklearn.datasets" if info["name"] in ("diabetes", "breast_cancer", "iris",
                                                      "digits", "wine") else "gdexp")
    profile = {k: info[k] for k in ("n_train", "n_test", "n_features", "n_classes", "task")}
    dataset = Dataset(name=info["name"], digest=info["digest"], source_type="code",
                      source=json.dumps({"generator": source, "name": info["name"]}),
                      profile=json.dumps(profile))
    mlflow_client.log_inputs(run_id, datasets=[
        DatasetInput(dataset, tags=[InputTag(key="mlflow.data.context", value="train")])])
