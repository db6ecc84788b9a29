"""Config → core objects: the one module that reads a DictConfig, validates it and builds a Plan."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .descent import Armijo
from .inits import INITS
from .objectives import OBJECTIVES, Objective
from .optimizers import OPTIMIZERS, Optimizer
from .paths import CONF_DIR, EXPERIMENTS_DIR, ROOT, outputs_dir  # noqa: F401 (re-exported)
from .schedules import SCHEDULES


class ConfigError(ValueError):
    """A bad config value: the message names the key, the bad value and what is allowed."""


def register_resolvers() -> None:
    """``${gdexp_outputs:}`` in YAML: the absolute outputs folder, whatever the working dir."""
    if not OmegaConf.has_resolver("gdexp_outputs"):
        OmegaConf.register_new_resolver("gdexp_outputs", lambda: str(outputs_dir()))
    if not OmegaConf.has_resolver("objective_lr"):
        OmegaConf.register_new_resolver("objective_lr", objective_lr)


def objective_lr(*, _root_: DictConfig) -> float:
    """``${objective_lr:}``: the configured objective's own plain-GD rate (Objective.lr),
    so that every objective's defaults give a run that does not blow up."""
    return build_objective(_root_).lr


@dataclass(frozen=True)
class Plan:
    """Everything one run needs, built and validated from a config."""

    objective: Objective
    x0: np.ndarray          # (d, n)
    optimizer: Optimizer
    lr: np.ndarray          # (n,) base rate per start
    schedule: Optional[Callable[[int], float]]
    line_search: Optional[Armijo]
    run_kwargs: dict        # max_steps, tolerances, budgets for descent.run
    diagnostics: Optional[dict] = None  # keyword arguments of diagnostics.analyse; None: off

    @property
    def n(self) -> int:
        return self.x0.shape[1]


def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def number(cfg: DictConfig, key: str, *, minimum=None, strict=False, integer=False,
           allow_inf=False):
    """Read the dotted ``key`` as a number in range; otherwise a ConfigError naming the key."""
    full = key
    value = OmegaConf.select(cfg, key)
    kind = "an integer" if integer else "a number"
    rule = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if ok and not allow_inf:
        ok = math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        raise ConfigError(f"{full}: expected {kind}{rule}, got {_fmt(value)}")
    return int(value) if integer else float(value)


def _choice(cfg: DictConfig, group: str, registry: dict) -> str:
    name = cfg[group].get("name")
    if name not in registry:
        raise ConfigError(f"{group}.name: unknown {group} {_fmt(name)}; "
                          f"available: {', '.join(sorted(registry))}")
    return name


def _params(cfg: DictConfig, group: str, factory: Callable, skip=("name",)) -> dict:
    """The group's keys minus ``skip``, checked against the factory's keyword parameters."""
    params = {k: v for k, v in OmegaConf.to_container(cfg[group], resolve=True).items()
              if k not in skip}
    sig = inspect.signature(factory)
    allowed = [p for p in sig.parameters if p not in ("objective", "n_starts", "rng")]
    for key in params:
        if key not in allowed:
            raise ConfigError(f"{group}.{key}: unknown parameter of {group} "
                              f"{cfg[group].name!r}; allowed: {', '.join(allowed) or 'none'}")
    return params


def _call(group: str, name: str, factory: Callable, **kwargs):
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{group} {name!r}: {e}") from None


def _vector(cfg: DictConfig, key: str, dim: Optional[int] = None) -> Optional[np.ndarray]:
    """Read the dotted ``key`` as a float vector (a scalar counts as length 1), or None."""
    value = OmegaConf.select(cfg, key)
    if value is None:
        return None
    raw = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    full = key
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{full}: expected a list of numbers, got {_fmt(raw)}")
    arr = np.asarray(items, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{full}: expected finite numbers, got {raw}")
    if dim is not None and arr.size != dim:
        raise ConfigError(f"{full}: has length {arr.size} but objective.dim is {dim} "
                          f"(got {raw})")
    return arr


def build_objective(cfg: DictConfig) -> Objective:
    name = _choice(cfg, "objective", OBJECTIVES)
    factory = OBJECTIVES[name]
    return _call("objective", name, factory, **_params(cfg, "objective", factory))


def build(cfg: DictConfig) -> Plan:
    """Validate the whole config and build the objects a run needs; raises ConfigError."""
    seed = number(cfg, "seed", minimum=0, integer=True)
    objective = build_objective(cfg)

    init_name = _choice(cfg, "init", INITS)
    n_starts = number(cfg, "init.n_starts", minimum=1, integer=True)
    init_params = _params(cfg, "init", INITS[init_name], skip=("name", "n_starts"))
    for key in ("x0", "low", "high", "mean", "std"):
        if key in init_params:
            vec = _vector(cfg, f"init.{key}", objective.dim if key == "x0" else None)
            init_params[key] = vec
            if key in ("low", "high", "mean", "std") and vec is not None \
                    and vec.size not in (1, objective.dim):
                raise ConfigError(f"init.{key}: expected one number or {objective.dim}, "
                                  f"got {vec.size}")
    if init_params.get("std") is not None and np.any(init_params["std"] <= 0):
        raise ConfigError(f"init.std: expected numbers > 0, got {init_params['std'].tolist()}")
    if "k" in init_params:
        number(cfg, "init.k", minimum=1, integer=True)
    rng = np.random.default_rng(seed)
    x0 = _call("init", init_name, INITS[init_name], objective=objective, n_starts=n_starts,
               rng=rng, **init_params)

    opt_name = _choice(cfg, "optimizer", OPTIMIZERS)
    lr_node = cfg.optimizer.lr
    if OmegaConf.is_list(lr_node):
        lr = _vector(cfg, "optimizer.lr")
        if lr.size == 0 or np.any(lr <= 0):
            raise ConfigError(f"optimizer.lr: expected numbers > 0, got {lr.tolist()}")
        # A learning-rate axis: every start runs once per rate, all in one batch.
        n = x0.shape[1]
        x0 = np.tile(x0, (1, lr.size))
        lr = np.repeat(lr, n)
    else:
        lr = np.full(x0.shape[1], number(cfg, "optimizer.lr", minimum=0, strict=True))
    opt_factory = OPTIMIZERS[opt_name]
    optimizer = _call("optimizer", opt_name, opt_factory,
                      **_params(cfg, "optimizer", opt_factory, skip=("name", "lr")))

    sched_name = _choice(cfg, "schedule", SCHEDULES)
    sched_factory = SCHEDULES[sched_name]
    schedule = _call("schedule", sched_name, sched_factory,
                     **_params(cfg, "schedule", sched_factory))
    if sched_name == "constant":
        schedule = None  # the runner's fast path; a constant multiplier of 1 changes nothing

    line_search = None
    ls_name = cfg.line_search.get("name")
    if ls_name == "armijo":
        line_search = Armijo(c=number(cfg, "line_search.c", minimum=0, strict=True),
                             shrink=number(cfg, "line_search.shrink", minimum=0, strict=True),
                             max_iter=number(cfg, "line_search.max_iter", minimum=1, integer=True))
        if not (line_search.c < 1 and line_search.shrink < 1):
            raise ConfigError("line_search: expected c and shrink in (0, 1), got "
                              f"c={line_search.c}, shrink={line_search.shrink}")
    elif ls_name != "none":
        raise ConfigError(f"line_search.name: unknown line search {_fmt(ls_name)}; "
                          "available: armijo, none")

    run_kwargs = dict(
        max_steps=number(cfg, "stop.max_steps", minimum=0, integer=True),
        grad_tol=number(cfg, "stop.grad_tol", minimum=0),
        step_tol=number(cfg, "stop.step_tol", minimum=0),
        value_tol=number(cfg, "stop.value_tol", minimum=0),
        diverge_above=number(cfg, "stop.diverge_above", minimum=0, strict=True, allow_inf=True),
        basin_tol=number(cfg, "basin_tol", minimum=0, strict=True),
        trace_budget=number(cfg, "trace_budget", minimum=1, integer=True),
        path_budget=number(cfg, "path_budget", minimum=1, integer=True),
    )
    return Plan(objective, x0, optimizer, lr, schedule, line_search, run_kwargs,
                diagnostics_options(cfg))


def check_tracking(cfg: DictConfig) -> None:
    """Range and type checks for the tracking group (reachability is tracking.py's job)."""
    t = cfg.tracking
    number(cfg, "tracking.max_curve_points", minimum=2, integer=True)
    for key in ("enabled", "plots", "skip_finished"):
        if not isinstance(t[key], bool):
            raise ConfigError(f"tracking.{key}: expected true or false, got {_fmt(t[key])}")
    if not isinstance(t.experiment, str) or not t.experiment.strip():
        raise ConfigError(f"tracking.experiment: expected a non-empty name, got "
                          f"{_fmt(t.experiment)}")
    if t.uri is not None and not isinstance(t.uri, str):
        raise ConfigError(f"tracking.uri: expected an MLflow tracking URI, got {_fmt(t.uri)}")


def diagnostics_options(cfg: DictConfig) -> Optional[dict]:
    """Keyword arguments for diagnostics.analyse, or None when diagnostics are off."""
    node = cfg.diagnostics
    if not isinstance(node.enabled, bool):
        raise ConfigError(f"diagnostics.enabled: expected true or false, got {_fmt(node.enabled)}")
    if not node.enabled:
        return None
    targets = _vector(cfg, "diagnostics.targets")
    if targets is None or targets.size == 0:
        raise ConfigError("diagnostics.targets: expected a non-empty list of exponents k "
                          "(targets f - f* <= 10^k), got []")
    return {"exponents": targets.tolist(),
            "max_hessian_starts": number(cfg, "diagnostics.max_hessian_starts", minimum=1,
                                         integer=True)}


SWEEP_METRICS = ("final_loss", "steps")


def sweep_metric(cfg: DictConfig) -> str:
    """What a sweeper minimises (see pipeline.Outcome.sweep_value)."""
    metric = cfg.get("sweep_metric", "final_loss")
    if metric not in SWEEP_METRICS:
        raise ConfigError(f"sweep_metric: expected one of {', '.join(SWEEP_METRICS)}, "
                          f"got {_fmt(metric)}")
    return metric


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved."""
    return OmegaConf.to_container(cfg, resolve=True)
