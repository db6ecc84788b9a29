"""Hydra multirun hooks: prepare the store once and group every job under one sweep run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEEP_FILE = ".gdexp_sweep.json"

# The sweep run opened by this process, so that the command line can close it if the sweep
# dies before Hydra calls on_multirun_end.
_open_sweep: dict[str, Any] = {}


class SweepCallback(Callback):
    """In the launching process, before any job: migrate the store, create the experiment and
    a parent run, and leave its id in the sweep folder, where every job (local, joblib,
    submitit, a cluster with a shared filesystem) finds it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from . import config as gconfig
        from . import tracking

        if not config.tracking.enabled:
            return
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
        tracking.log(client, run_id, params={"sweep.overrides": " ".join(overrides) or "(none)"})
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(
            {"run_id": run_id, "experiment_id": experiment_id, "uri": uri}))
        _open_sweep.update(run_id=run_id, uri=uri, experiment_id=experiment_id)
        print(f"sweep run {run_id} in experiment {config.tracking.experiment!r}: "
              f"{tracking.ui_links(uri, experiment_id)}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_sweep("FINISHED")


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
