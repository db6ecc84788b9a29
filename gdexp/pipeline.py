"""One run end to end: config → plan → descent → files → tracking, shared by `run` and `reproduce`."""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import __version__, config, descent
from .descent import Result
from .diagnostics import row_median

# Keys that change where or how a run is recorded, not what it computes.
VOLATILE_KEYS = ("tracking", "diagnostics", "sweep_metric")


@dataclass
class Outcome:
    """What a finished run hands back to the command line."""

    result: Optional[Result]
    run_id: Optional[str] = None
    experiment_id: Optional[str] = None
    uri: Optional[str] = None
    skipped: bool = False

    @property
    def value(self) -> float:
        """The number a sweeper minimises: the (median) final loss; 1e300 if none is finite."""
        if self.result is None:
            return float("nan")
        finite = self.result.f[np.isfinite(self.result.f)]
        return float(np.median(finite)) if finite.size else 1e300

    def sweep_value(self, metric: str, max_steps: int) -> float:
        """What a sweeper minimises: ``final_loss`` (see ``value``) or ``steps``, the median
        steps to converge, where a start that did not converge counts 2 * max_steps."""
        if metric == "final_loss" or self.result is None:
            return self.value
        converged = np.array(self.result.outcomes) == "converged"
        steps = np.where(converged, self.result.steps, 2 * max_steps)
        return float(np.median(steps))


@functools.lru_cache(maxsize=None)
def code_version() -> dict[str, str]:
    """The git commit of the project and whether its tree had uncommitted changes."""
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(config.ROOT), *args], capture_output=True,
                                 text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "gdexp", "conf",
                "experiments", "pyproject.toml")
    return {"code.commit": commit or f"gdexp-{__version__}",
            "code.dirty": "unknown" if dirty is None else str(bool(dirty)).lower()}


@functools.lru_cache(maxsize=None)
def environment_tags() -> dict[str, str]:
    """Versions that can change a run's numbers: numpy, autograd, python and the BLAS."""
    from importlib.metadata import version

    from threadpoolctl import threadpool_info

    tags = {"gdexp.version": __version__, "numpy.version": np.__version__,
            "autograd.version": version("autograd"),
            "python.version": sys.version.split()[0]}
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if blas:
        tags.update({"blas.library": str(blas[0].get("internal_api")),
                     "blas.version": str(blas[0].get("version")),
                     "blas.architecture": str(blas[0].get("architecture"))})
    return tags


def config_hash(resolved: dict, commit: str) -> str:
    """Hash of what a run computes: the resolved config without volatile keys, plus the code."""
    core = {k: v for k, v in resolved.items() if k not in VOLATILE_KEYS}
    blob = json.dumps(core, sort_keys=True, default=str) + "|" + commit
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_name(cfg: DictConfig, plan: config.Plan) -> str:
    lr = np.unique(plan.lr)
    lr_part = f"lr{lr[0]:g}" if lr.size == 1 else f"lr{lr.min():g}-{lr.max():g}x{lr.size}"
    name = f"{cfg.objective.name}-{cfg.optimizer.name}-{lr_part}-s{cfg.seed}"
    return name if plan.n == 1 else f"{name}-n{plan.n}"


def outcome_tags(result: Result) -> dict[str, str]:
    """status / stop_rule / basin: the start's own for one start, the worst one (or mixed) for many."""
    outcomes = set(result.outcomes)
    status = next(s for s in ("diverged", "max_steps", "converged") if s in outcomes)
    rules = {s.rule for s in result.status}
    basins = set(result.basin)
    tags = {"status": status, "stop_rule": rules.pop() if len(rules) == 1 else "mixed",
            "basin": basins.pop() if len(basins) == 1 else "mixed"}
    if result.n == 1 and status == "diverged":
        tags["diverged_at_step"] = str(int(result.steps[0]))
    return tags


def summary_metrics(result: Result) -> dict[str, float]:
    f = result.f
    finite = f[np.isfinite(f)]
    if result.n == 1:
        m = {"final_loss": f[0], "final_grad_norm": result.grad_norm[0],
             "steps": result.steps[0], "evaluations": result.evaluations[0],
             "distance_to_minimum": result.distance[0], "nearest_minimum": result.nearest[0]}
        m.update({f"final_x.{i}": v for i, v in enumerate(result.x[:50, 0])})
        return m
    outcomes = np.array(result.outcomes)
    basin = np.array(result.basin)
    return {
        "n_starts": result.n,
        "fraction_converged": np.mean(outcomes == "converged"),
        "fraction_max_steps": np.mean(outcomes == "max_steps"),
        "fraction_diverged": np.mean(outcomes == "diverged"),
        "fraction_global": np.mean(basin == "global"),
        "fraction_local": np.mean(basin == "local"),
        "median_steps": np.median(result.steps),
        "best_final_loss": finite.min() if finite.size else None,
        "median_final_loss": np.median(finite) if finite.size else None,
        "final_loss": np.median(finite) if finite.size else None,
    }


def curves(result: Result) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-step curves to log: the start's own for one start, median (and best) over many."""
    t = result.trace
    if result.n == 1:
        out = {"loss": t.loss[:, 0], "grad_norm": t.grad_norm[:, 0]}
    else:
        # rows where every start has diverged: numpy warns "All-NaN slice"; NaN is the answer
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            loss = np.where(np.isfinite(t.loss), t.loss, np.nan)
            gn = np.where(np.isfinite(t.grad_norm), t.grad_norm, np.nan)
            out = {"loss": row_median(loss), "loss_best": np.nanmin(loss, axis=1),
                   "grad_norm": row_median(gn)}
    if not np.all(t.lr == t.lr[0]):
        out["lr"] = t.lr[:, 0] if result.n == 1 else np.median(t.lr, axis=1)
    return {k: (t.steps, v) for k, v in out.items()}


def write_starts_table(path: Path, objective, result: Result) -> Path:
    d = result.x.shape[0]
    header = (["start", "lr"] + [f"x0.{i}" for i in range(d)] + [f"x.{i}" for i in range(d)]
              + ["f", "grad_norm", "steps", "evaluations", "status", "stop_rule",
                 "nearest_minimum", "distance", "basin"])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for j in range(result.n):
            w.writerow([j, repr(result.lr[j])] + [repr(v) for v in result.x0[:, j]]
                       + [repr(v) for v in result.x[:, j]]
                       + [repr(result.f[j]), repr(result.grad_norm[j]), int(result.steps[j]),
                          int(result.evaluations[j]), result.status[j].outcome,
                          result.status[j].rule, int(result.nearest[j]),
                          repr(result.distance[j]), result.basin[j]])
    return path


def write_files(out_dir: Path, cfg: DictConfig, overrides: list[str], plan: config.Plan,
                result: Result, diag: Optional[dict], plots: bool) -> Path:
    """Everything a run keeps, in ``out_dir/artifacts``: config, overrides, trace, table, figures."""
    art = out_dir / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    (art / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (art / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    t = result.trace
    np.savez_compressed(art / "trace.npz", steps=t.steps, loss=t.loss, grad_norm=t.grad_norm,
                        lr=t.lr, path_steps=t.path_steps, path=t.path, x0=result.x0,
                        x=result.x, f=result.f, steps_taken=result.steps, base_lr=result.lr)
    write_starts_table(art / "starts.csv", plan.objective, result)
    if diag is not None:
        np.savez_compressed(art / "diagnostics.npz", **diag["arrays"])
        if diag["table"]:
            with open(art / "fixed_target.csv", "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=["target", "exponent", "successes", "n", "aRT"])
                w.writeheader()
                w.writerows({k: row[k] for k in w.fieldnames} for row in diag["table"])
    if plots:
        from . import plots as figures

        figures.run_figures(art / "plots", plan.objective, result, diag,
                            title=run_name(cfg, plan))
    return art


class Progress:
    """Prints step, steps/s and f to stderr every few seconds of a long descent."""

    def __init__(self, every_seconds: float = 5.0, stream=None):
        self.every = every_seconds
        self.stream = stream or sys.stderr
        self.start = self.last = time.perf_counter()

    def __call__(self, k, x, f, grad_norm, active):
        if k & 1023:
            return
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        with np.errstate(all="ignore"):
            best = np.nanmin(np.where(np.isfinite(f), f, np.nan)) if np.isfinite(f).any() else f[0]
        print(f"  step {k}  {k / (now - self.start):,.0f} steps/s  f = {best:.6g}  "
              f"active {int(active.sum())}/{active.size}", file=self.stream, flush=True)


def describe(name: str, objective, result: Result) -> str:
    """A short human summary of the outcome."""
    if result.n == 1:
        s = result.status[0]
        where = ""
        if result.basin[0] != "none":
            where = (f", at {result.basin[0]} minimum {int(result.nearest[0])} "
                     f"(distance {result.distance[0]:.2e})")
        return (f"{name}: {s.outcome} ({s.rule}) after {int(result.steps[0])} steps, "
                f"f = {result.f[0]:.6g}{where}")
    counts = {o: result.outcomes.count(o) for o in ("converged", "max_steps", "diverged")}
    basins = {b: result.basin.count(b) for b in ("global", "local", "none")}
    return (f"{name}: {result.n} starts: " + ", ".join(f"{v} {k}" for k, v in counts.items())
            + "; basins: " + ", ".join(f"{v} {k}" for k, v in basins.items()))


@dataclass
class Job:
    """One run prepared from its config (validated, named, its tracking ready), not yet descended."""

    cfg: DictConfig
    out_dir: Path
    overrides: list
    plan: config.Plan
    name: str
    resolved: dict
    uri: Optional[str] = None            # None: tracking off
    experiment_id: Optional[str] = None
    chash: Optional[str] = None
    tags: Optional[dict] = None          # the run's tags at creation
    run_id: Optional[str] = None

    @property
    def client(self):
        from . import tracking

        return tracking.client(self.uri)


def prepare(cfg: DictConfig, out_dir: Path, overrides: list[str],
            parent_run_id: Optional[str] = None, extra_tags: Optional[dict] = None,
            experiments: Optional[dict] = None) -> Job:
    """Validate the config and build what its run needs; raises ConfigError before any run exists.

    ``experiments`` (a dict kept by the caller) remembers the experiment id per store and
    name, so that a sweep looks each one up once, not once per job.
    """
    plan = config.build(cfg)
    config.check_tracking(cfg)
    resolved = config.resolved(cfg)
    job = Job(cfg, Path(out_dir), list(overrides), plan, run_name(cfg, plan), resolved)
    if not cfg.tracking.enabled:
        return job
    from . import tracking

    uri = tracking.resolve_uri(cfg.tracking.uri)
    key = (uri, cfg.tracking.experiment)
    if experiments is not None and key in experiments:
        experiment_id = experiments[key]
    else:
        tracking.check_uri(uri)
        experiment_id = tracking.ensure_experiment(tracking.client(uri), cfg.tracking.experiment,
                                                   uri)
        if experiments is not None:
            experiments[key] = experiment_id
    code = code_version()
    chash = config_hash(resolved, code["code.commit"])
    tags = {"objective": cfg.objective.name, "optimizer": cfg.optimizer.name,
            "config_hash": chash, "mlflow.source.name": "gdexp", **code, **environment_tags(),
            **(extra_tags or {})}
    if parent_run_id:
        tags[tracking.PARENT_TAG] = parent_run_id
    job.uri, job.experiment_id, job.chash, job.tags = uri, experiment_id, chash, tags
    return job


def skip(job: Job, out=sys.stdout) -> Optional[Outcome]:
    """With tracking.skip_finished, the outcome of a FINISHED run of the same config; else None."""
    if job.uri is None or not job.cfg.tracking.skip_finished:
        return None
    from . import tracking

    done = tracking.find_finished(job.client, job.experiment_id, job.chash)
    if done is None:
        return None
    print(f"{job.name}: skipped, run {done} with the same config and code is FINISHED", file=out)
    return Outcome(None, done, job.experiment_id, job.uri, skipped=True)


def start(job: Job) -> str:
    """Create the job's run (RUNNING) in the store."""
    run = job.client.create_run(job.experiment_id, run_name=job.name, tags=job.tags)
    job.run_id = run.info.run_id
    return job.run_id


def log_params(job: Job) -> None:
    from . import tracking

    tracking.log(job.client, job.run_id, params=tracking.flatten(job.resolved))


def finish(job: Job, result: Result, with_params: bool = False) -> Outcome:
    """Everything after the descent: diagnostics, the run's files and, when tracked, one batch of
    metrics and tags (and params, ``with_params``) and the artifacts. Does not end the run."""
    cfg, plan = job.cfg, job.plan
    diag = _diagnose(cfg, plan, result)
    art = write_files(job.out_dir, cfg, job.overrides, plan, result, diag, cfg.tracking.plots)
    if job.uri is None:
        return Outcome(result)
    from . import tracking

    client = job.client
    # artifacts first: the client looks the run up to find its artifact folder, and that
    # look-up is cheaper before the run holds its metrics
    client.log_artifacts(job.run_id, str(art))
    stamp = int(time.time() * 1000)
    cap = cfg.tracking.max_curve_points
    scalars, series, tags = summary_metrics(result), curves(result), outcome_tags(result)
    if diag is not None:
        scalars, series, tags = ({**scalars, **diag["metrics"]}, {**series, **diag["curves"]},
                                 {**tags, **diag["tags"]})
    metrics = tracking.scalar_metrics(scalars, stamp)
    for key, (steps, values) in series.items():
        metrics += tracking.curve_metrics(key, steps, values, cap, stamp)
    tracking.log(client, job.run_id, metrics=metrics, tags=tags,
                 params=tracking.flatten(job.resolved) if with_params else None)
    return Outcome(result, job.run_id, job.experiment_id, job.uri)


def announce(job: Job, outcome: Outcome, out=sys.stdout) -> None:
    """The result lines of a run: its outcome, its run id and a link into the UI."""
    print(describe(job.name, job.plan.objective, outcome.result), file=out)
    if outcome.run_id is None:
        return
    from . import tracking

    uri = outcome.uri
    print(f"run {outcome.run_id} in experiment {job.cfg.tracking.experiment!r} ({uri})", file=out)
    print(f"  view: {tracking.ui_links(uri, outcome.experiment_id, outcome.run_id)}"
          + ("  (start the UI with `gdexp ui`)" if not uri.startswith("http") else ""), file=out)


def execute(cfg: DictConfig, out_dir: Path, overrides: list[str], parent_run_id: Optional[str] = None,
            extra_tags: Optional[dict] = None, out=sys.stdout) -> Outcome:
    """Validate, descend, write and log one run. Config errors raise before any run exists.

    BLAS runs single-threaded throughout: with several threads OpenBLAS may split a matrix
    product differently, and large batched runs would then not reproduce bit for bit.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        return _execute(cfg, out_dir, overrides, parent_run_id, extra_tags, out)


def _execute(cfg, out_dir, overrides, parent_run_id, extra_tags, out) -> Outcome:
    job = prepare(cfg, out_dir, overrides, parent_run_id, extra_tags)
    if job.uri is None:
        outcome = finish(job, _descend(job.plan))
        announce(job, outcome, out)
        return outcome
    skipped = skip(job, out)
    if skipped is not None:
        return skipped
    from . import tracking

    start(job)
    with tracking.run_status(job.client, job.run_id):
        log_params(job)
        outcome = finish(job, _descend(job.plan))
    announce(job, outcome, out)
    return outcome


def _diagnose(cfg: DictConfig, plan: config.Plan, result: Result) -> Optional[dict]:
    if plan.diagnostics is None:
        return None
    from . import diagnostics

    return diagnostics.analyse(plan.objective, result, optimizer=cfg.optimizer.name,
                               **plan.diagnostics)


def _descend(plan: config.Plan) -> Result:
    return descent.run(plan.objective, plan.x0, plan.optimizer, plan.lr,
                       schedule=plan.schedule, line_search=plan.line_search,
                       callback=Progress(), **plan.run_kwargs)
