"""`hydra/launcher=batched`: a sweep's jobs grouped into batched descents, each job still its own run."""

import logging
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (JobReturn, JobRuntime, JobStatus, configure_log, env_override,
                              setup_globals)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.gdexp_launcher.batched_launcher.BatchedLauncher"
    # bounds of one batched descent: at most this many jobs, and this much recorded trace
    max_group_jobs: int = 1000
    max_group_mb: int = 1024


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf,
                             provider="gdexp")

_MISSING = object()


class BatchedLauncher(Launcher):
    """Like Hydra's basic launcher (one process, each job's folder, `.hydra/` files, job logging
    and callbacks as Hydra's `run_job` makes them, see `_run_job`), except that a job's task
    is split in phases:
    every job is prepared first, the jobs that can share a descent (see `gdexp.batch`)
    descend together, then each job writes its files and its run."""

    def __init__(self, max_group_jobs: int = 1000, max_group_mb: int = 1024) -> None:
        super().__init__()
        self.max_group_jobs = int(max_group_jobs)
        self.max_group_bytes = int(max_group_mb) << 20
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from gdexp import batch

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        early = batch.EarlyRuns()
        try:
            return self._launch(job_overrides, initial_job_idx, early)
        finally:
            early.close()

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                early) -> Sequence[JobReturn]:
        """Prepare every job (its run created meanwhile by ``early``), then run the groups."""
        from gdexp import batch, callbacks, pipeline
        from gdexp.config import ConfigError

        experiments: dict = {}
        prepared: Dict[int, Any] = {}
        failed: Dict[int, BaseException] = {}

        def prepare(task_cfg: DictConfig) -> None:
            hydra_cfg = HydraConfig.get()
            idx = int(hydra_cfg.job.num)
            # the overrides as typed: a `${...}` in one is text here, not an interpolation
            overrides = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
            try:
                prepared[idx] = pipeline.prepare(task_cfg, Path(hydra_cfg.runtime.output_dir),
                                                 overrides, callbacks.sweep_parent(),
                                                 experiments=experiments,
                                                 label=callbacks.current_job())
                early.submit(prepared[idx])
            except (ConfigError, OmegaConfBaseException) as e:
                key = getattr(e, "full_key", None)
                line = str(e).splitlines()[0] if str(e) else type(e).__name__
                print(f"gdexp: error: {key}: {line}" if key else f"gdexp: error: {line}",
                      file=sys.stderr, flush=True)
                failed[idx] = SystemExit(2)

        returns: List[JobReturn] = []
        for idx, sweep_config in self._job_configs(job_overrides, initial_job_idx):
            ret = self._run_job(prepare, sweep_config)
            if idx in failed:
                ret.status, ret.return_value = JobStatus.FAILED, failed[idx]
            returns.append(ret)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

        order = [initial_job_idx + i for i in range(len(returns)) if
                 initial_job_idx + i in prepared]
        jobs = [prepared[idx] for idx in order]
        groups = batch.form_groups(jobs, self.max_group_jobs, self.max_group_bytes)
        for g, members in enumerate(groups, start=1):
            outcomes = batch.run_group([jobs[i] for i in members], f"group {g}/{len(groups)}",
                                       early=early)
            for i, outcome in zip(members, outcomes):
                idx = order[i]
                ret = returns[idx - initial_job_idx]
                if isinstance(outcome, BaseException):
                    ret.status, ret.return_value = JobStatus.FAILED, outcome
                else:
                    ret.status = JobStatus.COMPLETED
                    ret.return_value = batch.sweep_value(jobs[i], outcome)
        return returns

    def _run_job(self, task_function: TaskFunction, config: DictConfig) -> JobReturn:
        """One job as Hydra's `hydra.core.utils.run_job` runs it (HydraConfig set to the job's,
        its folder, `.hydra/{config,hydra,overrides}.yaml`, job logging, `env_set`, the
        callbacks around the task, the working directory restored) with one copy of the
        config where `run_job` makes four and its YAML emitted by libyaml: at batch speed
        those copies and the pure-Python YAML emitter were a third of each job's cost.
        ``config`` is the job's own (see _job_configs)."""
        from gdexp.config import to_yaml

        assert self.hydra_context is not None
        callbacks = self.hydra_context.callbacks
        instance = HydraConfig.instance()
        orig_hydra_cfg, old_cwd, chdir = instance.cfg, os.getcwd(), False
        try:
            # HydraConfig answers from the job's own config, a copy made for this job alone:
            # what set_config's masked copy of it would hold, without copying it once more
            OmegaConf.set_readonly(config.hydra, True)
            instance.cfg = config
            output_dir = os.path.abspath(os.path.join(str(config.hydra.sweep.dir),
                                                      str(config.hydra.sweep.subdir)))
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = output_dir
            task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
            OmegaConf.set_struct(task_cfg, OmegaConf.is_struct(config))
            ret = JobReturn(cfg=task_cfg, hydra_cfg=config,
                            overrides=list(config.hydra.overrides.task))
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            chdir = bool(config.hydra.job.chdir)
            if chdir:
                os.chdir(output_dir)
            ret.working_dir = os.getcwd()
            configure_log(config.hydra.job_logging, config.hydra.verbose)
            if config.hydra.output_subdir is not None:
                hydra_output = Path(output_dir) / str(config.hydra.output_subdir)
                hydra_output.mkdir(parents=True, exist_ok=True)
                hydra_yaml = {"hydra": OmegaConf.to_container(config.hydra, enum_to_str=True)}
                for name, node in (("config.yaml", task_cfg), ("hydra.yaml", hydra_yaml),
                                   ("overrides.yaml", config.hydra.overrides.task)):
                    (hydra_output / name).write_text(to_yaml(node), encoding="utf-8")
            with env_override(config.hydra.job.env_set):
                callbacks.on_job_start(config=config, task_function=task_function)
                try:
                    ret.return_value = task_function(task_cfg)
                    ret.status = JobStatus.COMPLETED
                except Exception as e:
                    ret.return_value = e
                    ret.status = JobStatus.FAILED
            ret.task_name = JobRuntime.instance().get("name")
            for handler in logging.getLogger().handlers:
                handler.flush()
            callbacks.on_job_end(config=config, job_return=ret)
            return ret
        finally:
            instance.cfg = orig_hydra_cfg
            if chdir:
                os.chdir(old_cwd)

    def _job_configs(self, job_overrides, initial_job_idx):
        """Each job's composed config. Hydra composes the first job of every set of jobs that
        differ only in the values of the same plain keys; the others are that config with
        their own values set as Hydra sets them (``OmegaConf.update(..., merge=True)``),
        their own override list and override_dirname, which is what composing them gives
        (a test compares the two) at a fraction of the cost."""
        from hydra._internal.config_loader_impl import get_overrides_dirname
        from hydra.core.override_parser.overrides_parser import OverridesParser

        loader = self.hydra_context.config_loader
        parser = OverridesParser.create()
        choices = set(self.config.hydra.runtime.choices)
        templates: dict = {}
        known: dict = {}  # override string -> its parse: a sweep's jobs repeat most of them
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            new = list(dict.fromkeys(o for o in overrides if o not in known))
            if new:
                known.update(zip(new, parser.parse_overrides(new)))
            parsed = [known[o] for o in overrides]
            values = _value_overrides(parsed, choices)
            cfg = None
            if values is not None:
                shape = (tuple(o.input_line for o in parsed if o not in values),
                         tuple(o.key_or_group for o in values))
                template = templates.get(shape)
                if template is None:
                    cfg = loader.load_sweep_config(self.config, list(overrides))
                    ok = all(_plain_value(cfg, o) for o in values)
                    # kept pickled: unpickling a config copies it in a third of deepcopy's time
                    templates[shape] = (pickle.dumps(cfg, pickle.HIGHEST_PROTOCOL) if ok
                                        else False)
                elif template is not False:
                    cfg = pickle.loads(template)
                    for o in values:
                        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
                    app = [o for o in parsed if not o.is_hydra_override()]
                    dirname = cfg.hydra.job.config.override_dirname
                    cfg.hydra.overrides.task = [o.input_line for o in app]
                    cfg.hydra.job.override_dirname = get_overrides_dirname(
                        overrides=app, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep,
                        exclude_keys=dirname.exclude_keys)
                    OmegaConf.copy_cache(from_config=self.config, to_config=cfg)
            if cfg is None:
                cfg = loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            yield idx, cfg


def _value_overrides(parsed, choices) -> Optional[list]:
    """The overrides that only set the value of a plain key, or None when a job's config cannot
    be derived from another's (a key set twice)."""
    keys = [o.key_or_group for o in parsed]
    if len(set(keys)) != len(keys):
        return None
    return [o for o in parsed
            if not (o.is_hydra_override() or o.package is not None or o.is_delete()
                    or o.is_add() or o.is_force_add() or o.is_sweep_override()
                    or "/" in o.key_or_group or o.key_or_group in choices)]


def _plain_value(cfg: DictConfig, override) -> bool:
    """Whether setting this override's key anew replaces it entirely: an existing key that is
    no config group choice, holding and receiving no mapping (mappings merge)."""
    key = override.key_or_group
    if key in cfg.hydra.runtime.choices:
        return False
    node = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    if node is _MISSING or OmegaConf.is_dict(node):
        return False
    return not isinstance(override.value(), dict)
