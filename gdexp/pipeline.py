"""One run end to end: config → plan → descent → files → tracking, shared by `run` and `reproduce`."""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import __version__, config, descent, processes
from .descent import Result
from .diagnostics import POINT_CLASSES, row_median

# Keys that change where or how a run is recorded, not what it computes.
VOLATILE_KEYS = ("tracking", "diagnostics", "sweep_metric", "memory_limit")


@dataclass
class Outcome:
    """What a finished run hands back to the command line."""

    result: Optional[Result]
    run_id: Optional[str] = None
    experiment_id: Optional[str] = None
    uri: Optional[str] = None
    skipped: bool = False
    claim: Optional[dict] = None         # claims.evaluate's answer when the run checked one
    points: Optional[dict] = None        # start -> its end point's class by the Hessian

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
    blas = numpy_blas([i for i in threadpool_info() if i.get("user_api") == "blas"])
    if blas:
        tags.update({"blas.library": str(blas.get("internal_api")),
                     "blas.version": str(blas.get("version")),
                     "blas.architecture": str(blas.get("architecture"))})
    return tags


def numpy_blas(loaded: list[dict]) -> Optional[dict]:
    """numpy's own BLAS among the ``loaded`` ones (threadpoolctl's entries). Others may be
    loaded beside it (scipy's wheel brings its own), listed in no fixed order: numpy's is
    the one its wheel ships beside the package, else the one of the version numpy was built
    against, else the first by path."""
    if len(loaded) <= 1:
        return loaded[0] if loaded else None
    home = Path(np.__file__).resolve().parent
    beside = {home.parent / "numpy.libs", home / ".libs"}
    built = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    version = built.get("version")
    for own in (lambda i: Path(i["filepath"]).resolve().parent in beside,
                lambda i: version is not None and i.get("version") == version):
        mine = sorted((i for i in loaded if own(i)), key=lambda i: i["filepath"])
        if mine:
            return mine[0]
    return min(loaded, key=lambda i: i["filepath"])


def config_hash(resolved: dict, commit: str) -> str:
    """Hash of what a run computes: the resolved config without volatile keys, plus the code."""
    core = {k: v for k, v in resolved.items() if k not in VOLATILE_KEYS}
    blob = json.dumps(core, sort_keys=True, default=str) + "|" + commit
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_name(cfg: DictConfig, plan: config.Plan) -> str:
    """What sets this run apart, as a name: the objective option (and any of its scalar
    settings changed from that option's file, e.g. ``rosenbrock-d4``), the data set, the
    optimizer, a schedule or line search other than the default, the rate(s), the batch size,
    the seed."""
    parts = [objective_label(cfg)]
    data = OmegaConf.select(cfg, "data.name", default="none")
    if data != "none":
        parts.append(str(data))
    parts.append(optimizer_label(cfg))
    if cfg.schedule.name != "constant":
        parts.append(str(cfg.schedule.name))
    if cfg.line_search.name != "none":
        parts.append(str(cfg.line_search.name))
    lr = np.unique(plan.lr)
    parts.append(f"lr{lr[0]:g}" if lr.size == 1 else f"lr{lr.min():g}-{lr.max():g}x{lr.size}")
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    if batch is not None:
        parts.append(f"b{batch}")
    parts.append(f"s{cfg.seed}")
    if plan.n > 1:
        parts.append(f"n{plan.n}")
    return "-".join(parts)


# Short forms of objective settings in run names.
SETTING_NAMES = {"dim": "d"}
# ... and of optimizer settings (``momentum-mu0.5``, ``adam-beta1_0.8-amsgrad``)
OPTIMIZER_SETTING_NAMES = {"momentum": "mu", "dampening": "tau", "weight_decay": "wd",
                           "beta1": "beta1_", "beta2": "beta2_", "lr_decay": "lrdecay",
                           "initial_accumulator_value": "acc"}


@functools.lru_cache(maxsize=None)
def _options(group: str) -> dict[str, dict]:
    """The option files of a config group: option name -> its settings."""
    return {path.stem: OmegaConf.to_container(OmegaConf.load(path))
            for path in sorted((config.CONF_DIR / group).glob("*.yaml"))}


def optimizer_label(cfg: DictConfig) -> str:
    """The optimizer's name, plus its settings (the rate aside) that differ from its option
    file: what tells the runs of a momentum or beta sweep apart."""
    settings = OmegaConf.to_container(cfg.optimizer, resolve=True)
    name = str(settings.get("name"))
    option = _options("optimizer").get(name, {})
    changed = []
    for key, value in settings.items():
        if key in ("name", "lr") or value == option.get(key, value):
            continue
        if isinstance(value, bool):
            changed += [key] if value else [f"no{key}"]
        elif isinstance(value, (int, float)):
            changed.append(f"{OPTIMIZER_SETTING_NAMES.get(key, key)}{value:g}")
    return "-".join([name, *changed])


def objective_label(cfg: DictConfig) -> str:
    """The objective option a config came from (``quadratic_ill``, not ``quadratic``), plus
    its scalar settings that differ from that option's file (``d4``, ``b10``).

    Read from the config alone, so a reproduced run, rebuilt from its logged config, gets
    the same label: the option is the one of the same function whose settings agree with
    the config on the most keys (its own name first on a tie)."""
    settings = OmegaConf.to_container(cfg.objective, resolve=True)
    name = settings.get("name")
    candidates = {stem: opt for stem, opt in _options("objective").items()
                  if opt.get("name") == name}
    if not candidates:
        return str(name)

    def agreement(item):
        stem, opt = item
        return (sum(settings.get(k) == v for k, v in opt.items()), stem == name)

    stem, option = max(candidates.items(), key=agreement)
    changed = [f"{SETTING_NAMES.get(k, k)}{v:g}" for k, v in settings.items()
               if k != "name" and isinstance(v, (int, float)) and not isinstance(v, bool)
               and v != option.get(k)]
    return "-".join([stem, *changed])


def reproduction_name(name: str, source: str) -> str:
    """A reproduced run's name: the original's, marked, with the source it was rebuilt from."""
    if "/" in source or "\\" in source:  # a run folder: its name, and its sweep's for a job
        folder = Path(source)
        short = f"{folder.parent.name}-{folder.name}" if folder.name.isdigit() else folder.name
    else:
        short = source[:8]
    return f"{name}-repro-{short}"


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


def learning_metrics(objective, result: Result) -> dict[str, float]:
    """Final held-out loss and accuracies (median over starts), and exact constants (L, mu)."""
    out = {k: float(v) for k, v in objective.constants.items()}
    if objective.global_minima:
        out["f_star"] = objective.f_min
    t = result.trace
    for name, values in t.evals.items():
        last = values[-1]
        finite = last[np.isfinite(last)]
        if finite.size:
            out[f"final_{name}"] = float(finite[0] if result.n == 1 else np.median(finite))
    return out


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
    series = {k: (t.steps, v) for k, v in out.items()}
    # mini-batch loss per step, and held-out loss / accuracies on the evaluation steps
    extra = {}
    if t.batch_loss is not None:
        extra["batch_loss"] = (t.batch_steps, t.batch_loss)
    if t.eval_steps is not None:
        extra.update({k: (t.eval_steps, v) for k, v in t.evals.items()})
    for key, (steps, values) in extra.items():
        if result.n == 1:
            series[key] = (steps, values[:, 0])
        else:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                series[key] = (steps, row_median(np.where(np.isfinite(values), values, np.nan)))
    return series


def _plain(value) -> str:
    return repr(float(value))


def write_starts_table(path: Path, objective, result: Result) -> Path:
    d = result.x.shape[0]
    header = (["start", "lr"] + [f"x0.{i}" for i in range(d)] + [f"x.{i}" for i in range(d)]
              + ["f", "grad_norm", "steps", "evaluations", "status", "stop_rule",
                 "nearest_minimum", "distance", "basin"])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for j in range(result.n):
            # repr of a Python float: the shortest text that reads back to the same number
            # (numpy's own repr would write np.float64(...) into every cell)
            w.writerow([j, _plain(result.lr[j])] + [_plain(v) for v in result.x0[:, j]]
                       + [_plain(v) for v in result.x[:, j]]
                       + [_plain(result.f[j]), _plain(result.grad_norm[j]),
                          int(result.steps[j]), int(result.evaluations[j]),
                          result.status[j].outcome, result.status[j].rule,
                          int(result.nearest[j]), _plain(result.distance[j]), result.basin[j]])
    return path


def write_files(out_dir: Path, cfg: DictConfig, overrides: list[str], plan: config.Plan,
                result: Result, diag: Optional[dict], plots: bool,
                drawn: Optional[Callable[[], None]] = None) -> Path:
    """Everything a run keeps, in ``out_dir/artifacts``: config, overrides, trace, table, figures.

    Written into a temporary folder renamed at the end: a full or read-only disk leaves no
    half-written artifacts, and the error names the folder. ``drawn``: the figures are being
    drawn elsewhere into that folder's ``plots/`` (see ``partial_plots``); it waits for them
    and raises what drawing them raised."""
    art = out_dir / "artifacts"
    partial = partial_plots(out_dir).parent
    try:
        if drawn is not None:
            drawn()
        partial.mkdir(parents=True, exist_ok=True)
        _write_artifacts(partial, cfg, overrides, plan, result, diag, plots and drawn is None)
        _replace(partial, art)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(art)
        raise
    return art


# A run's artifacts are written here, then renamed to artifacts/ once complete.
PARTIAL_ARTIFACTS = "artifacts.partial"


def partial_plots(out_dir: Path) -> Path:
    """Where a run's figures are drawn before its artifacts folder is complete."""
    return Path(out_dir) / PARTIAL_ARTIFACTS / "plots"


def clear_partial(out_dir: Path) -> None:
    """Remove what a run in this folder left half-written (killed while writing its
    artifacts): none of it may pass for a run's artifacts."""
    shutil.rmtree(Path(out_dir) / PARTIAL_ARTIFACTS, ignore_errors=True)


def _replace(partial: Path, art: Path) -> None:
    """``partial`` becomes ``art``. A folder that held a run before (the same hydra.run.dir or
    hydra.sweep.dir again) has its old artifacts replaced: the store keeps that run's own
    copies (hard links or uploads), so only this folder's names for them go."""
    if not art.exists():
        partial.rename(art)
        return
    old = art.with_name("artifacts.replaced")
    shutil.rmtree(old, ignore_errors=True)
    art.rename(old)
    partial.rename(art)
    shutil.rmtree(old, ignore_errors=True)


def _write_artifacts(art: Path, cfg: DictConfig, overrides: list[str], plan: config.Plan,
                     result: Result, diag: Optional[dict], plots: bool) -> None:
    (art / "config.yaml").write_text(config.to_yaml(cfg, resolve=True))
    (art / "overrides.yaml").write_text(config.to_yaml([str(o) for o in overrides]))
    t = result.trace
    extra = {f"eval.{k}": v for k, v in t.evals.items()}
    if t.eval_steps is not None:
        extra["eval_steps"] = t.eval_steps
    if t.batch_loss is not None:
        extra.update(batch_steps=t.batch_steps, batch_loss=t.batch_loss)
    np.savez_compressed(art / "trace.npz", steps=t.steps, loss=t.loss, grad_norm=t.grad_norm,
                        lr=t.lr, path_steps=t.path_steps, path=t.path, x0=result.x0,
                        x=result.x, f=result.f, steps_taken=result.steps, base_lr=result.lr,
                        **extra)
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


class Progress:
    """Prints step, steps/s and f to stderr every few seconds of a long descent."""

    def __init__(self, every_seconds: float = 5.0, stream=None):
        self.every = every_seconds
        self.stream = stream or sys.stderr
        self.start = self.last = time.perf_counter()

    def due(self, k) -> bool:
        """Whether to print at step k: every few seconds, looked at every 1024 steps (where a
        signal swallowed by a finalizer is raised again, see processes.check)."""
        if k & 1023:
            return False
        processes.check()
        now = time.perf_counter()
        if now - self.last < self.every:
            return False
        self.last = now
        return True

    def __call__(self, k, x, f, grad_norm, active):
        if not self.due(k):
            return
        now = time.perf_counter()
        with np.errstate(all="ignore"):
            best = np.nanmin(np.where(np.isfinite(f), f, np.nan)) if np.isfinite(f).any() else f[0]
        print(f"  step {k}  {k / (now - self.start):,.0f} steps/s  f = {best:.6g}  "
              f"active {int(active.sum())}/{active.size}", file=self.stream, flush=True)


# What each stopping rule means, in words for the console.
RULE_WORDS = {"grad_tol": "gradient norm ≤ grad_tol", "step_tol": "step length ≤ step_tol",
              "value_tol": "change in f ≤ value_tol", "non_finite": "f or ∇f non-finite",
              "diverge_above": "f > diverge_above"}
MAX_RATE_LINES = 30  # a learning-rate axis with more rates than this is summarised in one line


def _point(x) -> str:
    x = np.asarray(x, dtype=float).ravel()
    return "(" + ", ".join(f"{v:.4g}" for v in x) + ")" if x.size <= 4 else f"(a point in {x.size}-D)"


def _minimum_words(objective, i: int) -> str:
    m = objective.minima[i]
    return f"{'global' if m.is_global else 'local'} minimum {_point(m.x)}"


def _incomplete(objective) -> str:
    return "" if objective.minima_complete else \
        f"; {objective.name} has more minima than it lists"


def _one_start(objective, result: Result, j: int, points: Optional[dict] = None) -> str:
    """One start's outcome in words: what stopped it, when, where it ended (at no listed
    minimum: what its Hessian there says, from ``points``, start -> class)."""
    s, k, f = result.status[j], int(result.steps[j]), result.f[j]
    if s.outcome == "diverged":
        return f"diverged at step {k} ({RULE_WORDS[s.rule]}), f = {f:.6g}"
    if s.outcome == "converged":
        head = f"converged after {k} steps ({RULE_WORDS[s.rule]}), f = {f:.6g}"
    else:
        head = f"step budget used up after {k} steps, not converged, f = {f:.6g}"
    i, d = int(result.nearest[j]), float(result.distance[j])
    if i < 0:
        return head + ("" if objective.minima_complete else _incomplete(objective))
    if result.basin[j] != "none" and s.outcome == "converged":
        return head + f", at the {_minimum_words(objective, i)} (distance {d:.2g})"
    if result.basin[j] != "none":
        return head + f", {d:.2g} from the {_minimum_words(objective, i)}"
    cls = (points or {}).get(j)
    hessian = (f", a {cls} point by its Hessian"
               if cls in POINT_CLASSES[:4] and s.outcome == "converged" else "")
    return (head + f", at no listed minimum{hessian} (nearest: the "
            f"{_minimum_words(objective, i)}, {d:.2g} away{_incomplete(objective)})")


def _hessian_counts(points: Optional[dict], cols) -> str:
    """`` (converged there, by the Hessian: 3 saddle)`` over the starts of ``cols``, which
    ended at no listed minimum, that converged (a point the gradient leaves is no critical
    point, whatever its curvature); ``at 20 of 35`` when the diagnostics analysed a subset;
    empty when none of them was analysed."""
    classes = [points[j] for j in cols if j in (points or {})]
    counts = ", ".join(f"{classes.count(c)} {c}" for c in POINT_CLASSES if classes.count(c))
    if not counts:
        return ""
    which = "" if len(classes) == len(cols) else f" at {len(classes)} of {len(cols)}"
    return f" (converged there, by the Hessian{which}: {counts})"


def _counts(result: Result, cols, points: Optional[dict] = None) -> str:
    outcomes = [result.outcomes[j] for j in cols]
    basins = [result.basin[j] for j in cols]
    words = (("converged", "converged"), ("max_steps", "used up the step budget"),
             ("diverged", "diverged"))
    head = ", ".join(f"{outcomes.count(o)} {w}" for o, w in words if outcomes.count(o))
    ended = [f"{basins.count(b)} at a {b} minimum" for b in ("global", "local") if basins.count(b)]
    if basins.count("none"):
        ended.append(f"{basins.count('none')} at no listed minimum"
                     + _hessian_counts(points, [j for j in cols if result.basin[j] == "none"
                                                and result.outcomes[j] == "converged"]))
    return head + "; " + ", ".join(ended)


def describe(name: str, objective, result: Result, points: Optional[dict] = None) -> str:
    """The outcome in words: one line for one start or a batch; for a learning-rate axis,
    a line per rate saying what that rate did. ``points``: start -> the class of its end
    point by the Hessian (``Outcome.points``), said of the starts that ended at no listed
    minimum."""
    if result.n == 1:
        return f"{name}: {_one_start(objective, result, 0, points)}"
    rates = np.unique(result.lr)
    head = f"{name}: {result.n} starts: {_counts(result, range(result.n), points)}"
    head += "" if objective.minima_complete or "no listed" not in head else \
        f" ({objective.name} has more minima than it lists)"
    if rates.size == 1 or rates.size > MAX_RATE_LINES:
        return head
    lines = [head]
    for lr in rates:
        cols = np.flatnonzero(result.lr == lr)
        what = (_one_start(objective, result, cols[0], points) if cols.size == 1
                else f"{cols.size} starts: {_counts(result, cols, points)}")
        lines.append(f"  lr={lr:g}: {what}")
    return "\n".join(lines)


@dataclass
class Job:
    """One run prepared from its config (validated, named, its tracking ready), not yet descended."""

    cfg: DictConfig
    out_dir: Path
    overrides: list
    plan: config.Plan
    name: str
    resolved: dict
    label: Optional[str] = None          # "job 2/4" for a sweep's job: its lines start with it
    parent_run_id: Optional[str] = None
    uri: Optional[str] = None            # None: tracking off
    experiment_id: Optional[str] = None
    chash: Optional[str] = None
    tags: Optional[dict] = None          # the run's tags at creation
    run_id: Optional[str] = None
    artifact_uri: Optional[str] = None   # the run's, from its creation

    @property
    def client(self):
        from . import tracking

        return tracking.client(self.uri)

    @property
    def lead(self) -> str:
        return f"{self.label}  " if self.label else ""


def prepare(cfg: DictConfig, out_dir: Path, overrides: list[str],
            parent_run_id: Optional[str] = None, extra_tags: Optional[dict] = None,
            experiments: Optional[dict] = None, label: Optional[str] = None) -> Job:
    """Validate the config and build what its run needs; raises ConfigError before any run exists.

    ``experiments`` (a dict kept by the caller) remembers the experiment id per store and
    name, so that a sweep looks each one up once, not once per job.
    """
    plan = config.build(cfg)
    config.check_tracking(cfg)
    resolved = config.resolved(cfg)
    clear_partial(out_dir)
    name = run_name(cfg, plan)
    if extra_tags and "reproduced_from" in extra_tags:
        name = reproduction_name(name, str(extra_tags["reproduced_from"]))
    job = Job(cfg, Path(out_dir), list(overrides), plan, name, resolved, label, parent_run_id)
    if not cfg.tracking.enabled:
        return job
    from . import tracking

    uri = tracking.resolve_uri(cfg.tracking.uri)
    key = (uri, cfg.tracking.experiment)
    if experiments is not None and key in experiments:
        experiment_id = experiments[key]
    else:
        tracking.check_uri(uri)
        client = tracking.client(uri)
        experiment_id = tracking.ensure_experiment(client, cfg.tracking.experiment, uri)
        if not parent_run_id:  # a sweep's launcher does this once for all its jobs
            tracking.reap_dead_runs(client, [experiment_id])
        if experiments is not None:
            experiments[key] = experiment_id
    code = code_version()
    chash = config_hash(resolved, code["code.commit"])
    tags = {"objective": cfg.objective.name, "optimizer": cfg.optimizer.name,
            "config_hash": chash, "mlflow.source.name": "gdexp", **code, **environment_tags(),
            **processes.identity(), **(extra_tags or {})}
    if parent_run_id:
        tags[tracking.PARENT_TAG] = parent_run_id
    job.uri, job.experiment_id, job.chash, job.tags = uri, experiment_id, chash, tags
    return job


def skip(job: Job, out=None) -> Optional[Outcome]:
    """With tracking.skip_finished, the outcome of a FINISHED run of the same config; else None."""
    out = sys.stdout if out is None else out
    if job.uri is None or not job.cfg.tracking.skip_finished:
        return None
    from . import tracking

    done = tracking.find_finished(job.client, job.experiment_id, job.chash)
    if done is None:
        return None
    if job.parent_run_id:  # the sweep's results include it: its report lists it
        tracking.log(job.client, job.parent_run_id,
                     tags={f"{tracking.REUSED_TAG}.{done}": job.name})
    print(f"{job.lead}{job.name}: skipped, run {done} with the same config and code is "
          "FINISHED", file=out, flush=True)
    return Outcome(None, done, job.experiment_id, job.uri, skipped=True)


def start(job: Job) -> str:
    """Create the job's run (RUNNING) in the store."""
    run = job.client.create_run(job.experiment_id, run_name=job.name, tags=job.tags)
    job.run_id, job.artifact_uri = run.info.run_id, run.info.artifact_uri
    return job.run_id


def log_params(job: Job) -> None:
    from . import tracking

    tracking.log(job.client, job.run_id, params=tracking.flatten(job.resolved))


_HERE = object()  # not computed yet: finish computes it


def finish(job: Job, result: Result, monitor=None, with_params: bool = False,
           diag=_HERE, claim=_HERE, drawn: Optional[Callable[[], None]] = None,
           logged: Optional[Callable[[], None]] = None) -> Outcome:
    """Everything after the descent: diagnostics, the run's files and, when tracked, the
    artifacts and one batch of metrics and tags (and params, ``with_params``). Does not end
    the run. ``diag``, ``claim``: the diagnostics and the checked claim when already computed
    (``_diagnose``, ``check_claim``); ``drawn``: see write_files; ``logged``: hands the batch
    (``store_batch``) to another process, called once the run's files and artifacts are in
    (so that a run failing before has none of its rows, as when it logs them itself); the
    caller waits for it before ending the run."""
    cfg, plan = job.cfg, job.plan
    if diag is _HERE:
        diag = _diagnose(cfg, plan, result, monitor)
    if claim is _HERE:
        claim = check_claim(cfg, plan, result, diag)
    art = write_files(job.out_dir, cfg, job.overrides, plan, result, diag, cfg.tracking.plots,
                      drawn)
    if job.uri is None:
        return Outcome(result, claim=claim, points=end_points(diag))
    from . import tracking

    client = job.client
    # the run's artifact folder is known from its creation: no look-up of the run
    tracking.log_artifacts(client, job.run_id, art, job.artifact_uri)
    if plan.objective.dataset is not None:
        tracking.log_dataset(client, job.run_id, plan.objective.dataset)
    if logged is not None:
        logged()
    else:
        tracking.log(client, job.run_id, **store_batch(job, result, diag, claim, with_params))
    return Outcome(result, job.run_id, job.experiment_id, job.uri, claim=claim,
                   points=end_points(diag))


def end_points(diag: Optional[dict]) -> Optional[dict]:
    """Start -> the class of its end point by the Hessian, for the starts the diagnostics
    analysed (None without them)."""
    sm = (diag or {}).get("parts", {}).get("smoothness")
    if sm is None:
        return None
    return {int(j): str(c) for j, c in zip(sm["starts"], sm["point_class"])}


def store_batch(job: Job, result: Result, diag: Optional[dict], claim: Optional[dict],
                with_params: bool) -> dict:
    """A tracked run's one batch of store rows: its metrics (summary values and thinned
    curves), tags and, ``with_params``, its params; keywords of ``tracking.log``."""
    from . import tracking

    plan = job.plan
    stamp = int(time.time() * 1000)
    cap = job.cfg.tracking.max_curve_points
    scalars, series, tags = summary_metrics(result), curves(result), outcome_tags(result)
    if plan.objective.dataset is not None:
        scalars.update(learning_metrics(plan.objective, result))
        tags.update({f"dataset.{k}": str(v) for k, v in plan.objective.dataset.items()
                     if k != "name"})
    if diag is not None:
        scalars, series, tags = ({**scalars, **diag["metrics"]}, {**series, **diag["curves"]},
                                 {**tags, **diag["tags"]})
    if claim is not None:
        scalars, tags = {**scalars, **claim["metrics"]}, {**tags, **claim["tags"]}
    metrics = tracking.scalar_metrics(scalars, stamp)
    for key, (steps, values) in series.items():
        metrics += tracking.curve_metrics(key, steps, values, cap, stamp)
    return {"metrics": metrics, "tags": tags,
            "params": tracking.flatten(job.resolved) if with_params else None}


def check_claim(cfg: DictConfig, plan: config.Plan, result: Result,
                diag: Optional[dict]) -> Optional[dict]:
    """The run's ``claim`` checked on its result (claims.evaluate), or None without one."""
    if plan.claim is None:
        return None
    from . import claims

    ev = claims.Evidence(plan.objective, result, diag, str(cfg.optimizer.name),
                         OmegaConf.to_container(cfg.optimizer, resolve=True))
    return claims.evaluate(plan.claim, ev)


def claim_lines(claim: dict) -> list[str]:
    """The claim in words: whether it held, then one line per row (paper vs measured)."""
    tags = claim["tags"]
    rows = claim["rows"]
    held = sum(r.held for r in rows)
    head = (f"claim {tags['claim']}: {'held' if tags['claim.held'] == 'true' else 'NOT held'}"
            f" ({held}/{len(rows)} rows)")
    if "claim.error" in tags:
        head += f": {tags['claim.error']}"
    return [head] + [f"  {'ok ' if r.held else 'NO '} {r.key}: paper {r.paper:.4g}, "
                     f"measured {r.measured:.4g}  ({r.statement})" for r in rows]


def announce(job: Job, outcome: Outcome, out=None) -> None:
    """The result lines of a run: its outcome, and its run id (on the same line for a
    sweep's job, whose sweep printed the link to its runs) or its links into the UI."""
    out = sys.stdout if out is None else out
    text = describe(job.name, job.plan.objective, outcome.result, outcome.points)
    claim = [] if outcome.claim is None else claim_lines(outcome.claim)
    if claim and job.label:  # a sweep's job keeps one line: whether its claim held
        first, *rest = text.split("\n")
        text = "\n".join([f"{first}  ({claim[0]})", *rest])
    elif claim:
        text = "\n".join([text, *claim])
    if outcome.run_id is None:
        print(job.lead + text, file=out, flush=True)
        return
    from . import tracking

    uri, experiment_id, run_id = outcome.uri, outcome.experiment_id, outcome.run_id
    if job.label:
        first, *rest = text.split("\n")
        print("\n".join([f"{job.lead}{first}  [run {run_id[:8]}]", *rest]), file=out,
              flush=True)
    else:
        print(text, file=out)
        print(f"run {run_id} in experiment {job.cfg.tracking.experiment!r} ({uri})", file=out)
        print(f"  view: {tracking.ui_links(uri, experiment_id)}{tracking.ui_hint(uri)}\n"
              f"  run:  {tracking.ui_links(uri, experiment_id, run_id)}", file=out, flush=True)


def execute(cfg: DictConfig, out_dir: Path, overrides: list[str], parent_run_id: Optional[str] = None,
            extra_tags: Optional[dict] = None, out=None, job: Optional[str] = None) -> Outcome:
    """Validate, descend, write and log one run. Config errors raise before any run exists.

    ``job`` (``job 2/4``) marks a sweep's job: its outcome and run id then share one line,
    the sweep having printed the link to its runs once.

    BLAS runs single-threaded throughout: with several threads OpenBLAS may split a matrix
    product differently, and large batched runs would then not reproduce bit for bit.
    """
    out = sys.stdout if out is None else out
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        try:
            return _execute(cfg, out_dir, overrides, parent_run_id, extra_tags, out,
                            job)
        except config.ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - only store and disk failures are translated
            from . import tracking

            line = tracking.explain(e, tracking.resolve_uri(cfg.tracking.uri)
                                    if cfg.tracking.enabled else None)
            if line is None:
                raise
            raise tracking.StoreError(line) from None


def _execute(cfg, out_dir, overrides, parent_run_id, extra_tags, out, label) -> Outcome:
    job = prepare(cfg, out_dir, overrides, parent_run_id, extra_tags, label=label)
    if job.uri is None:
        monitor = sharpness_monitor(job.plan)
        outcome = finish(job, _descend(job.plan, monitor), monitor)
        announce(job, outcome, out)
        return outcome
    skipped = skip(job, out)
    if skipped is not None:
        return skipped
    from . import tracking

    start(job)
    with tracking.run_status(job.client, job.run_id):
        log_params(job)
        monitor = sharpness_monitor(job.plan)
        outcome = finish(job, _descend(job.plan, monitor), monitor)
    announce(job, outcome, out)
    return outcome


def sharpness_monitor(plan: config.Plan):
    """The sharpness callback when ``diagnostics.sharpness_every`` > 0, else None."""
    opts = plan.diagnostics or {}
    if not opts.get("sharpness_every"):
        return None
    from .sharpness import SharpnessMonitor

    return SharpnessMonitor(plan.objective, opts["sharpness_every"], tol=opts["sharpness_tol"])


def _rates(plan: config.Plan):
    """Each start's scheduled rate at the given steps, (m, n) (the threshold moves with it)."""
    def lr_at(steps):
        factor = np.array([1.0 if plan.schedule is None else plan.schedule(int(k))
                           for k in steps], dtype=float)
        return factor[:, None] * plan.lr[None, :]

    return lr_at


def _diagnose(cfg: DictConfig, plan: config.Plan, result: Result,
              monitor=None) -> Optional[dict]:
    if plan.diagnostics is None:
        return None
    from . import diagnostics

    opts = {k: v for k, v in plan.diagnostics.items() if not k.startswith("sharpness_")}
    sharp = None if monitor is None else monitor.arrays(_rates(plan), plan.optimizer.stability)
    return diagnostics.analyse(plan.objective, result, optimizer=cfg.optimizer.name,
                               stability=plan.optimizer.stability, sharpness=sharp, **opts)


def _descend(plan: config.Plan, monitor=None) -> Result:
    # The sharpness monitor rides on descent.run's one callback port, next to the progress
    # line: the loop itself knows nothing about it.
    from .sharpness import chain

    return descent.run(plan.objective, plan.x0, plan.optimizer, plan.lr,
                       schedule=plan.schedule, line_search=plan.line_search,
                       callback=chain(Progress(), monitor) if monitor else Progress(),
                       **plan.run_kwargs)
