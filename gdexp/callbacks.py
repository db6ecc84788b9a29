"""Hydra multirun hooks: prepare the store once, group every job under one sweep run, show progress."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEEP_FILE = ".gdexp_sweep.json"
# What a sweeper writes at the end of a search (optuna, nevergrad, ax): its best point.
RESULTS_FILE = "optimization_results.yaml"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# launchers that run every job in the launching process
IN_PROCESS_LAUNCHERS = ("hydra._internal.core_plugins.basic_launcher.BasicLauncher",
                        "hydra_plugins.gdexp_launcher.batched_launcher.BatchedLauncher")

# The sweep run opened by this process (the launcher), so that the command line can close
# it if the sweep dies before Hydra calls on_multirun_end; and in any process, the sweep of
# the job being run (handed to workers inside the pickled callback, never through the
# folder: two launches may share a folder).
_open_sweep: dict[str, Any] = {}
_job_sweep: dict[str, Any] = {}
_launch: dict[str, Any] = {}
LOCK_FILE = ".gdexp_sweep.lock"
# What Hydra writes into a run's or a sweep's folder before gdexp may refuse it.
HYDRA_FILES = (".hydra", "multirun.yaml")


class SweepError(SystemExit):
    """A sweep that must not start: one line on stderr, exit status 2."""

    def __init__(self, message: str) -> None:
        print(f"gdexp: error: {message}", file=sys.stderr, flush=True)
        super().__init__(2)

# "job k/N" of the job this process runs now: its result line starts with it.
_current_job: dict[str, str] = {}


def current_job() -> Optional[str]:
    return _current_job.get("label")


class SweepCallback(Callback):
    """In the launching process, before any job: count the jobs and check the tracking
    config; once every job's config is known good (cli._validate_choices, or right away for
    a sweeper that proposes jobs as it goes), open_sweep() prepares the store and the parent
    run. Hydra pickles this object to the workers when it launches jobs, so they learn the
    job count and their parent run from it (__getstate__)."""

    def __init__(self) -> None:
        self.total_jobs: Optional[int] = None
        self.sweep: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "sweep": dict(_open_sweep)}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from . import config as gconfig, processes

        try:
            self.total_jobs = count_jobs(config)
        except gconfig.ConfigError as e:
            raise SweepError(str(e)) from None
        _launch.clear()
        note_folder(config.hydra.sweep.dir)
        _launch.update(total_jobs=self.total_jobs)
        if self.total_jobs == 0:
            raise SweepError("the sweep has no jobs: a sweep override expands to no values "
                             "(e.g. range(0))")
        try:
            gconfig.check_keys(config)
            if config.tracking.enabled:
                gconfig.check_tracking(config)
            check_launcher(config)
        except gconfig.ConfigError as e:
            raise SweepError(str(e)) from None
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        if launcher not in IN_PROCESS_LAUNCHERS:
            processes.answer_ctrl_c_for_children()
        target = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        if target != BASIC_SWEEPER:  # it does not show its jobs before launching them
            open_sweep(config)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        note_folder(config.hydra.run.dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        _job_sweep.clear()
        _job_sweep.update(self.sweep or _open_sweep)
        k = int(config.hydra.job.num) + 1
        of = f"/{self.total_jobs}" if self.total_jobs else ""
        _current_job["label"] = f"job {k}{of}"

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        _current_job.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            if _open_sweep:
                log_best(Path(config.hydra.sweep.dir))
        finally:
            close_sweep("FINISHED")


def check_launcher(config: DictConfig) -> None:
    """The launcher settings its own code would take and then fail on once the sweep run
    exists (joblib's n_jobs of 0) or misuse without a word (a group cap of 0)."""
    from . import config as gconfig

    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if target.endswith(".BatchedLauncher"):
        for key in ("max_group_jobs", "max_group_mb"):
            gconfig.number(config, f"hydra.launcher.{key}", minimum=1, integer=True)
    elif target.endswith(".JoblibLauncher"):
        n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
            raise gconfig.ConfigError(f"hydra.launcher.n_jobs: expected a non-zero integer "
                                      f"(-1: every core), got {n_jobs!r}")


def _claim_folder(sweep_dir: Path) -> None:
    """Hold an exclusive lock on the sweep folder for this process's lifetime (the kernel
    drops it when the process dies, however it dies); a folder locked by a live sweep is
    refused: both sweeps would write the same job folders."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no check
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(sweep_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        holder = ""
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads((sweep_dir / SWEEP_FILE).read_text())
            holder = f" (sweep run {info['run_id']} of process {info['pid']} is running there)"
        raise SweepError(f"hydra.sweep.dir: expected a folder no running sweep uses, got "
                         f"{str(sweep_dir)!r}{holder}") from None
    _launch["lock_fd"] = fd


def open_sweep(config: DictConfig) -> None:
    """Prepare the store, create the experiment and the sweep's parent run (once per launch)."""
    if _open_sweep or "lock_fd" in _launch:
        return
    sweep_dir = Path(config.hydra.sweep.dir)
    _claim_folder(sweep_dir)
    _launch["sweep_dir"] = sweep_dir
    if not config.tracking.enabled:
        return
    from . import config as gconfig
    from . import processes, tracking

    try:
        uri = tracking.resolve_uri(config.tracking.uri)
        tracking.check_uri(uri)
        client = tracking.client(uri)
        experiment_id = tracking.ensure_experiment(client, config.tracking.experiment, uri)
    except gconfig.ConfigError as e:
        raise SweepError(str(e)) from None
    tracking.reap_dead_runs(client, [experiment_id])
    total_jobs = _launch.get("total_jobs")
    overrides = list(config.hydra.overrides.task)
    run = client.create_run(experiment_id, run_name=f"sweep-{sweep_dir.name}",
                            tags={"gdexp.sweep": "true", "sweep_dir": str(sweep_dir),
                                  "mlflow.source.name": "gdexp", **processes.identity()})
    run_id = run.info.run_id
    tracking.ensure_view(client, experiment_id, sweep=run_id)
    params = {"sweep.overrides": " ".join(overrides) or "(none)",
              "sweep.sweeper": _short_target(config.hydra.sweeper),
              "sweep.launcher": _short_target(config.hydra.launcher)}
    if total_jobs is not None:
        params["sweep.total_jobs"] = str(total_jobs)
    tracking.log(client, run_id, params=params)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(
        {"run_id": run_id, "experiment_id": experiment_id, "uri": uri,
         "total_jobs": total_jobs, "pid": os.getpid()}))
    _open_sweep.update(run_id=run_id, uri=uri, experiment_id=experiment_id)
    processes.heartbeats.add(run_id, lambda: client.set_tag(
        run_id, processes.HEARTBEAT_TAG, str(int(time.time()))))
    jobs = f"{total_jobs} jobs" if total_jobs else "jobs"
    print(f"sweep {sweep_dir.name}: {jobs}, sweep run {run_id} in experiment "
          f"{config.tracking.experiment!r} ({uri})\n"
          f"  view: {tracking.ui_links(uri, experiment_id, sweep=run_id)}"
          f"{tracking.ui_hint(uri)}", flush=True)


def _short_target(node: Any) -> str:
    target = str(OmegaConf.select(node, "_target_", default="?"))
    return target.rsplit(".", 1)[-1]


def count_jobs(config: DictConfig) -> Optional[int]:
    """How many jobs this multirun launches, when that is known up front: the cartesian product
    of the sweep overrides (basic sweeper), or n_trials (optuna); None otherwise."""
    from . import config as gconfig

    sweeper = config.hydra.sweeper
    target = str(OmegaConf.select(sweeper, "_target_", default=""))
    try:
        if target == BASIC_SWEEPER:
            params = OmegaConf.select(sweeper, "params") or {}
            lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
            sizes = _sweep_sizes(lines)
            return None if sizes is None else math.prod(sizes.values())
        if "optuna" in target.lower():
            n_trials = int(sweeper.n_trials)
            sampler = str(OmegaConf.select(sweeper, "sampler._target_", default=""))
            if sampler.endswith("GridSampler"):
                # the grid sampler stops after the grid; its space must be all choices/ranges
                params = OmegaConf.select(sweeper, "params") or {}
                lines = [f"{k}={v}" for k, v in params.items()]
                lines += [o for o in config.hydra.overrides.task if "=" in o]
                sizes = _sweep_sizes(lines)
                if sizes:
                    n_trials = min(n_trials, math.prod(sizes.values()))
            return n_trials
    except gconfig.ConfigError:
        raise
    except Exception:  # an odd override: the sweeper itself will report it; no count then
        return None
    return None


def _sweep_sizes(lines: list[str]) -> Optional[dict[str, int]]:
    """Number of values per key of the given overrides (a later override of a key wins, as in
    the basic sweeper), parsed by Hydra's own override parser; None if one cannot be counted."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() \
        else None
    sizes: dict[str, int] = {}
    for override in OverridesParser.create(config_loader=loader).parse_overrides(lines):
        key = override.get_key_element()
        if not override.is_sweep_override():
            sizes[key] = 1
        elif override.is_discrete_sweep():
            try:
                sizes[key] = sum(1 for _ in override.sweep_string_iterator())
            except ValueError as e:  # range(0,3,0): Python's range refuses it, mid-sweep
                from .config import ConfigError

                raise ConfigError(f"{key}: {e}, got {override.input_line!r}") from None
        else:
            return None
    return sizes


def best_point(sweep_dir: Path) -> Optional[tuple[dict, Optional[float]]]:
    """(best params, best value) from the sweeper's results file in ``sweep_dir``, if any."""
    path = sweep_dir / RESULTS_FILE
    if not path.exists():
        return None
    results = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    params = results.get("best_params", results.get("best_evaluated_params"))
    value = results.get("best_value", results.get("best_evaluated_result"))
    if not isinstance(params, dict):
        return None  # e.g. a multi-objective Pareto front: nothing single to report
    return params, (float(value) if isinstance(value, (int, float)) else None)


def log_best(sweep_dir: Path) -> None:
    """Put a search's best point onto the sweep run: params ``best.<key>``, metric
    ``best_value`` (and ``best_lr`` when the learning rate was searched), tag ``best_run_id``."""
    found = best_point(sweep_dir)
    if found is None:
        return
    from . import tracking

    params, value = found
    client = tracking.client(_open_sweep["uri"])
    run_id = _open_sweep["run_id"]
    metrics = {}
    if value is not None:
        metrics["best_value"] = value
    lr = params.get("optimizer.lr")
    if isinstance(lr, (int, float)):
        metrics["best_lr"] = lr
    tags = {}
    best_run = _matching_child(client, run_id, params)
    if best_run is not None:
        tags["best_run_id"] = best_run
    tracking.log(client, run_id, params={f"best.{k}": tracking.param_value(v)
                                         for k, v in params.items()},
                 metrics=tracking.scalar_metrics(metrics, 0), tags=tags)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    print(f"best: {shown} (value {value:g})" if value is not None else f"best: {shown}",
          flush=True)


def _matching_child(client, parent_run_id: str, params: dict) -> Optional[str]:
    """The first child run of the sweep whose params equal ``params`` (numbers compared as
    numbers, since the sweeper and the run may print them differently)."""
    from . import tracking

    experiment_id = _open_sweep["experiment_id"]
    runs = client.search_runs([experiment_id],
                              filter_string=f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=1000)

    def same(logged: Optional[str], wanted: Any) -> bool:
        if logged is None:
            return False
        if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
            try:
                return math.isclose(float(logged), float(wanted), rel_tol=1e-12, abs_tol=0)
            except ValueError:
                return False
        return logged == tracking.param_value(wanted)

    for run in runs:
        if all(same(run.data.params.get(k), v) for k, v in params.items()):
            return run.info.run_id
    return None


def note_folder(folder: Any) -> None:
    """At the start of a run or a sweep, before Hydra makes its folder: the folder and the
    nearest of its ancestors that exists (``clear_refused``)."""
    try:
        path = Path(str(folder)).absolute()
    except Exception:  # noqa: BLE001 - a folder that does not resolve fails later, in Hydra
        return
    anchor = next(p for p in (path, *path.parents) if p.exists())
    _launch["folder"] = (path, anchor)


def clear_refused() -> None:
    """After a refusal (a one-line error before anything ran): the run's or the sweep's
    folder, when this launch made it and it holds only what Hydra wrote (its .hydra configs,
    a job's log, multirun.yaml), and the folders above it that this launch made and that
    are empty now. A folder that was there before, or that holds anything else, stays."""
    entry = _launch.pop("folder", None)
    if entry is None:
        return
    folder, anchor = entry
    if folder == anchor or not folder.is_dir():
        return
    for item in folder.iterdir():
        if not (item.name in HYDRA_FILES or (item.suffix == ".log" and item.is_file())):
            return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == anchor:
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def clear_half_written() -> None:
    """Once the workers of an interrupted sweep are stopped: the artifacts folders they were
    still writing (a worker that joblib kills at once cannot clean up after itself)."""
    from .pipeline import PARTIAL_ARTIFACTS, clear_partial

    sweep_dir = _launch.get("sweep_dir")
    if sweep_dir is not None:
        for job_dir in Path(sweep_dir).glob(f"*/{PARTIAL_ARTIFACTS}"):
            clear_partial(job_dir.parent)


def close_sweep(status: str) -> int:
    """End the sweep run opened by this process, if still open, and every run of it still
    RUNNING (its worker was stopped, or died) with the same status (FAILED when the sweep
    itself finished). Returns how many such runs there were."""
    fd = _launch.pop("lock_fd", None)
    if fd is not None:
        os.close(fd)
    if not _open_sweep:
        return 0
    from . import processes, tracking

    info = dict(_open_sweep)
    _open_sweep.clear()
    processes.heartbeats.remove(info["run_id"])
    client = tracking.client(info["uri"])
    unfinished = tracking.end_unfinished(client, info["run_id"],
                                         "FAILED" if status == "FINISHED" else status)
    client.set_terminated(info["run_id"], status)
    return unfinished


def sweep_parent() -> Optional[str]:
    """The sweep run id the current job reports to (None outside a sweep)."""
    return _job_sweep.get("run_id")
