"""Hydra multirun hooks: prepare the store once, group every job under one sweep run, show progress."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEEP_FILE = ".gdexp_sweep.json"
# What a sweeper writes at the end of a search (optuna, nevergrad, ax): its best point.
RESULTS_FILE = "optimization_results.yaml"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

# The sweep run opened by this process, so that the command line can close it if the sweep
# dies before Hydra calls on_multirun_end.
_open_sweep: dict[str, Any] = {}


class SweepCallback(Callback):
    """In the launching process, before any job: count the jobs, migrate the store, create the
    experiment and a parent run, and leave its id in the sweep folder, where every job (local,
    joblib, submitit, a cluster with a shared filesystem) finds it. Hydra pickles this object
    to the workers after ``on_multirun_start``, so they know the job count too."""

    def __init__(self) -> None:
        self.total_jobs: Optional[int] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.total_jobs = count_jobs(config)
        if not config.tracking.enabled:
            return
        from . import config as gconfig
        from . import tracking

        gconfig.check_tracking(config)
        uri = tracking.resolve_uri(config.tracking.uri)
        tracking.check_uri(uri)
        client = tracking.client(uri)
        experiment_id = tracking.ensure_experiment(client, config.tracking.experiment, uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        run = client.create_run(experiment_id, run_name=f"sweep-{sweep_dir.name}",
                                tags={"gdexp.sweep": "true", "sweep_dir": str(sweep_dir),
                                      "mlflow.source.name": "gdexp"})
        run_id = run.info.run_id
        params = {"sweep.overrides": " ".join(overrides) or "(none)",
                  "sweep.sweeper": _short_target(config.hydra.sweeper),
                  "sweep.launcher": _short_target(config.hydra.launcher)}
        if self.total_jobs is not None:
            params["sweep.total_jobs"] = str(self.total_jobs)
        tracking.log(client, run_id, params=params)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(
            {"run_id": run_id, "experiment_id": experiment_id, "uri": uri,
             "total_jobs": self.total_jobs}))
        _open_sweep.update(run_id=run_id, uri=uri, experiment_id=experiment_id)
        print(f"sweep run {run_id} in experiment {config.tracking.experiment!r}: "
              f"{tracking.ui_links(uri, experiment_id)}", flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        if _short_target(config.hydra.launcher) == "BatchedLauncher":
            return  # it prints a line per group and per finished job instead
        k = int(config.hydra.job.num) + 1
        of = f"/{self.total_jobs}" if self.total_jobs else ""
        overrides = " ".join(config.hydra.overrides.task)
        print(f"job {k}{of}: {overrides or '(no overrides)'}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            if _open_sweep:
                log_best(Path(config.hydra.sweep.dir))
        finally:
            close_sweep("FINISHED")


def _short_target(node: Any) -> str:
    target = str(OmegaConf.select(node, "_target_", default="?"))
    return target.rsplit(".", 1)[-1]


def count_jobs(config: DictConfig) -> Optional[int]:
    """How many jobs this multirun launches, when that is known up front: the cartesian product
    of the sweep overrides (basic sweeper), or n_trials (optuna); None otherwise."""
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
            sizes[key] = sum(1 for _ in override.sweep_string_iterator())
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


def close_sweep(status: str) -> None:
    """End the sweep run opened by this process, if still open."""
    if not _open_sweep:
        return
    from . import tracking

    info = dict(_open_sweep)
    _open_sweep.clear()
    client = tracking.client(info["uri"])
    client.set_terminated(info["run_id"], status)


def sweep_parent(sweep_dir: Optional[str]) -> Optional[str]:
    """The sweep run id a job should report to, read from its sweep folder."""
    if not sweep_dir:
        return None
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())["run_id"]
