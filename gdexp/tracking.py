"""MLflow at the edge: the only module that imports mlflow; a handful of store calls per run."""
from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import json
import math
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

import numpy as np

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
    sweep's jobs in one process (basic launcher, joblib workers) share it."""
    # MLflow prints a progress bar per artifact download otherwise: noise in reports.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient  # 1.4 s import: only where tracking happens

    quiet_logging()
    return MlflowClient(tracking_uri=uri)


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
        except MlflowException:  # created meanwhile by a parallel job
            exp = mlflow_client.get_experiment_by_name(name)
    if exp.lifecycle_stage != "active":
        raise ConfigError(f"tracking.experiment: {name!r} is deleted in {uri}; restore it or "
                          "choose another name")
    ensure_view(mlflow_client, exp.experiment_id, tags=exp.tags)
    return exp.experiment_id


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that the run ends KILLED, not RUNNING."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def run_status(mlflow_client, run_id: str) -> Iterator[None]:
    """FINISHED on success, KILLED on Ctrl-C or SIGTERM, FAILED on any other exception."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except (KeyboardInterrupt, Terminated):
        status = "KILLED"
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        mlflow_client.set_terminated(run_id, status)


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
    except Exception as e:  # noqa: BLE001 - any driver error means the store cannot be opened
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{flag}: cannot open the store {uri} ({first})") from None


def get_run(mlflow_client, run_id: str):
    """The run with this id, or None when the store does not hold it."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


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
