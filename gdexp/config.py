"""Config → core objects: the one module that reads a DictConfig, validates it and builds a Plan."""
from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import os
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf

from . import descent
from .descent import Armijo
from .diagnostics import HESSIAN_BUDGET
from .inits import INITS
from .objectives import OBJECTIVES, Objective
from .objectives.data import CLASSIFICATION, DATASETS, REGRESSION, TASKS, Dataset
from .objectives.learning import ACTIVATIONS, LEARNING, LOSSES
from .sampling import BATCHES, SAMPLINGS
from .objectives.base import footprint_of
from .optimizers import OPTIMIZERS, Optimizer
from .paths import CONF_DIR, EXPERIMENTS_DIR, ROOT, outputs_dir  # noqa: F401 (re-exported)
from .schedules import SCHEDULES


class ConfigError(ValueError):
    """A bad config value: the message names the key, the bad value and what is allowed."""


def register_resolvers() -> None:
    """``${gdexp_outputs:}`` in YAML: the absolute outputs folder, whatever the working dir."""
    if not OmegaConf.has_resolver("gdexp_outputs"):
        OmegaConf.register_new_resolver("gdexp_outputs", lambda: str(outputs_dir()))
    # Arithmetic for presets that tie keys together (batch_size sets lr and max_steps);
    # the resolved values are what a run logs and what reproduce re-runs.
    if not OmegaConf.has_resolver("gdexp_mul"):
        OmegaConf.register_new_resolver("gdexp_mul", _mul)
    if not OmegaConf.has_resolver("gdexp_div"):
        OmegaConf.register_new_resolver("gdexp_div", _div)
    if not OmegaConf.has_resolver("objective_lr"):
        OmegaConf.register_new_resolver("objective_lr", objective_lr)


def _mul(*factors):
    out = 1
    for v in factors:
        out = out * v
    return out


def _div(a, b):
    """a / b, an integer when both are integers and b divides a."""
    if isinstance(a, int) and isinstance(b, int) and b and a % b == 0:
        return a // b
    return a / b


def objective_lr(*, _root_: DictConfig) -> float:
    """``${objective_lr:}``: the configured objective's own plain-GD rate (Objective.lr),
    so that every objective's defaults give a run that does not blow up.

    An objective that cannot be built has no rate: then its own one-line error is what the
    user must see, raised where the run builds it, not OmegaConf's wrapping of it here.
    Interpolations resolve on every access, so each objective config is built once here
    and its rate remembered."""
    objective = _root_.get("objective")
    data = _root_.get("data")
    key = json.dumps([OmegaConf.to_container(node, resolve=True) if node is not None else None
                      for node in (objective, data)], sort_keys=True, default=str)
    if key not in _RATES:
        try:
            _RATES[key] = build_objective(_root_).lr
        except ConfigError:
            return Objective.lr
        if len(_RATES) > 256:
            _RATES.pop(next(iter(_RATES)))
    return _RATES[key]


_RATES: dict = {}


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
    claim: Optional[str] = None         # a name in claims.CLAIMS, checked after the descent

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
        if (not allow_inf and not integer and isinstance(value, float)
                and not math.isfinite(value)):
            kind = "a finite number"  # inf is > 0, but no rate or tolerance
        raise ConfigError(f"{full}: expected {kind}{rule}, got {_fmt(value)}")
    return int(value) if integer else float(value)


def _choice(cfg: DictConfig, group: str, registry: dict) -> str:
    name = cfg[group].get("name")
    if name not in registry:
        raise ConfigError(f"{group}.name: unknown {group} {_fmt(name)}; "
                          f"available: {', '.join(sorted(registry))}")
    return name


# ---------------------------------------------------------------------------------------------
# Known keys. A key is known when a shipped config file sets it (conf/config.yaml, or an
# option file conf/GROUP/*.yaml of the option chosen) or, for a group backed by a registry,
# when it is a keyword parameter of the chosen factory. A new option file or a new default
# in conf/config.yaml is therefore known without code; `+key=value` typos are not.

# Groups whose `name` picks a factory; its keyword parameters are keys of the group.
REGISTRIES = {"objective": OBJECTIVES, "init": INITS, "optimizer": OPTIMIZERS,
              "schedule": SCHEDULES}
# Factory arguments that gdexp passes itself, never a config key.
_NOT_KEYS = ("objective", "n_starts", "rng")
# Config groups that belong to Hydra, not to a run.
_HYDRA_GROUPS = ("hydra",)


def _leaves(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of nested dicts (a list or an empty dict is a leaf)."""
    if isinstance(node, dict) and node:
        out = []
        for k, v in node.items():
            out += _leaves(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [prefix] if prefix else []


def _package(path) -> Optional[str]:
    """The ``# @package`` header of a config file, if any."""
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*@package\s+(\S+)", line)
        if m:
            return m.group(1)
        if line.strip() and not line.startswith("#"):
            return None
    return None


@functools.lru_cache(maxsize=None)
def _shipped_keys() -> tuple[frozenset, dict]:
    """(top-level dotted keys of conf/config.yaml, {group: [(option name, dotted keys)]}).
    An option's name is its ``name`` key (two files may share one: quadratic_ill is a
    quadratic), or its file name when it has none."""
    main = yaml.safe_load((CONF_DIR / "config.yaml").read_text()) or {}
    top = set(_leaves({k: v for k, v in main.items() if k not in ("defaults", *_HYDRA_GROUPS)}))
    groups: dict[str, list] = {}
    for folder in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        if folder.name in _HYDRA_GROUPS:
            continue
        options = groups.setdefault(folder.name, [])
        for path in sorted(folder.glob("*.yaml")):
            data = yaml.safe_load(path.read_text()) or {}
            data = {k: v for k, v in data.items() if k != "defaults"}
            if _package(path) == "_global_":
                top |= set(_leaves(data))
                continue
            options.append((data.get("name", path.stem), frozenset(_leaves(data))))
    return frozenset(top), groups


def group_keys(group: str, name: Any = None) -> list[str]:
    """The keys (relative to the group) that ``group`` accepts when its option ``name`` is
    chosen: those of the option files with that name and, for a registry, the factory's
    keyword parameters. An unknown or absent name: the keys of every option."""
    options = _shipped_keys()[1].get(group, [])
    chosen = [keys for option, keys in options if option == name and name is not None]
    registry = REGISTRIES.get(group, {})
    if not chosen and name not in registry:
        chosen = [keys for _, keys in options]
    keys: list[str] = []
    for ks in chosen:
        keys += [k for k in sorted(ks) if k not in keys]
    if isinstance(name, str) and name in registry:
        params = inspect.signature(registry[name]).parameters
        keys += [p for p in params if p not in _NOT_KEYS and p not in keys]
    return keys


def option_name(group: str, option: str) -> Optional[str]:
    """The ``name`` that choosing the option file ``group=option`` sets (None: no such file)."""
    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    return data.get("name", option) if isinstance(data, dict) else option


def default_choices() -> dict[str, dict]:
    """``{group: {"name": ...}}`` for the options conf/config.yaml chooses by default."""
    main = yaml.safe_load((CONF_DIR / "config.yaml").read_text()) or {}
    out = {}
    for entry in main.get("defaults", []):
        if isinstance(entry, dict):
            for group, option in entry.items():
                if isinstance(option, str) and option_name(group, option) is not None:
                    out[group] = {"name": option_name(group, option)}
    return out


def known_keys(cfg: Optional[dict] = None) -> list[str]:
    """Every dotted key a config may hold, given the options ``cfg`` chose (if given)."""
    top, groups = _shipped_keys()
    keys = sorted(top)
    for group in groups:
        node = (cfg or {}).get(group)
        name = node.get("name") if isinstance(node, dict) else None
        keys += [f"{group}.{k}" for k in group_keys(group, name)]
    return keys


def _is_known(path: str, known: set) -> bool:
    """``path`` is a known key, lies under a known leaf (a list or a null that a user filled
    with a mapping: its value check refuses it), or is a known mapping given as a scalar."""
    parts = path.split(".")
    return (any(".".join(parts[:i]) in known for i in range(1, len(parts) + 1))
            or any(k.startswith(path + ".") for k in known))


def _closest(word: str, choices: list[str], cutoff: float) -> Optional[str]:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return found[0] if found else None


def unknown_key_message(key: str, cfg: Optional[dict] = None) -> str:
    """``KEY: unknown key; did you mean CLOSEST? (allowed in GROUP: ...)`` for a key gdexp
    does not know, given the options ``cfg`` chose."""
    cfg = cfg or {}
    known = known_keys(cfg)
    top, groups = _shipped_keys()
    parts = key.split(".")
    tail = parts[-1]
    # its longest known parent, and the keys beside it there
    parent = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)
                   if any(k.startswith(".".join(parts[:i]) + ".") for k in known)), "")
    if parent:
        beside = [k[len(parent) + 1:] for k in known if k.startswith(parent + ".")]
    else:
        beside = sorted({k.split(".")[0] for k in top} | set(groups))
    rest = key[len(parent) + 1:] if parent else key
    closest = _closest(rest, beside, 0.6)
    closest = f"{parent}.{closest}" if closest and parent else closest
    if closest is None:  # the same name elsewhere (`+max_steps=10`)
        closest = next((k for k in known if k.rsplit(".", 1)[-1] == tail), None)
    hint = f"did you mean {closest}? " if closest else ""
    where = "at the top level"
    group = parts[0]
    if parent:
        where = f"in {parent}"
        node = cfg.get(group)
        name = node.get("name") if isinstance(node, dict) else None
        if parent == group and name is not None and group in groups:
            where = f"in {group} {_fmt(name)}"
            others = [str(o) for o, ks in groups[group] if rest in ks and o != name]
            others += [o for o, f in REGISTRIES.get(group, {}).items() if o not in others
                       and o != name and rest in inspect.signature(f).parameters]
            if others and not closest:
                hint = f"it is a key of {group} {', '.join(sorted(set(others)))} "
    hint = f"; {hint}" if hint else " "
    return f"{key}: unknown key{hint}(allowed {where}: {', '.join(beside)})"


def check_keys(cfg) -> None:
    """Refuse any key of the composed config that gdexp does not know (a ConfigError naming
    the key and the closest known one). Hydra's own settings (``hydra``) are not looked at."""
    data = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    data = {k: v for k, v in data.items() if k not in _HYDRA_GROUPS}
    known = set(known_keys(data))
    for path in _leaves(data):
        if not _is_known(path, known):
            raise ConfigError(unknown_key_message(path, data))


def _params(cfg: DictConfig, group: str, factory: Callable, skip=("name",)) -> dict:
    """The group's keys minus ``skip``, checked against the factory's keyword parameters."""
    node = cfg[group]
    params = {}
    for k in node.keys():  # key by key: a skipped key is not resolved (see _count_starts)
        if k not in skip:
            v = node[k]
            params[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    sig = inspect.signature(factory)
    allowed = [p for p in sig.parameters if p not in ("objective", "n_starts", "rng", "data")]
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
    except (ArithmeticError, RuntimeError) as e:  # e.g. its minima cannot be resolved
        given = ", ".join(f"{k}={_fmt(v)}" for k, v in kwargs.items()
                          if isinstance(v, (int, float, str)) and not isinstance(v, bool))
        raise ConfigError(f"{group} {name!r}: cannot be built with {given or 'these values'} "
                          f"({e})") from None


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
    params = _params(cfg, "objective", factory)
    if name not in LEARNING:
        data_name = OmegaConf.select(cfg, "data.name", default="none")
        if data_name != "none":
            raise ConfigError(f"data.name: expected none (objective {name!r} takes no data), "
                              f"got {_fmt(data_name)}")
        return _call("objective", name, factory, **params)
    data = build_data(cfg, name, params)
    _check_learning_params(cfg, name, params)
    return _call("objective", name, factory, data=data, **params)


# Data keys that drive the runner, not the loader.
RUNNER_DATA_KEYS = ("batch_size", "sampling", "batches", "eval_every")


def _learning_tasks(name: str, params: dict) -> tuple[str, ...]:
    """The data tasks an objective accepts with these parameters."""
    if name == "least_squares":
        return (REGRESSION,)
    if name == "logistic" or params.get("loss") == "cross_entropy":
        return (CLASSIFICATION,)
    return (REGRESSION, CLASSIFICATION)


def build_data(cfg: DictConfig, objective_name: str, objective_params: dict) -> Dataset:
    """Load the data set a learning objective needs, checking every data.* key."""
    name = OmegaConf.select(cfg, "data.name", default="none")
    tasks = _learning_tasks(objective_name, objective_params)
    fitting = sorted(k for k, t in TASKS.items() if t in tasks)
    what = "a data set" if len(tasks) > 1 else f"a {tasks[0]} data set"
    if name not in DATASETS:
        hint = "; choose one with data=NAME" if name == "none" else ""
        raise ConfigError(f"data.name: expected {what} for objective {objective_name!r} "
                          f"({', '.join(fitting)}), got {_fmt(name)}{hint}")
    if TASKS[name] not in tasks:
        if objective_name == "mlp":  # loss=cross_entropy on a regression set
            raise ConfigError(f"objective.loss: expected null or mse for regression data "
                              f"{name!r}, got 'cross_entropy'")
        raise ConfigError(f"data.name: expected {what} for objective {objective_name!r} "
                          f"({', '.join(fitting)}), got {_fmt(name)}")
    loader = DATASETS[name]
    params = _params(cfg, "data", loader, skip=("name",) + RUNNER_DATA_KEYS)
    if "test_fraction" in params:
        v = params["test_fraction"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ConfigError(f"data.test_fraction: expected a number in [0, 1), got {_fmt(v)}")
    for key in ("n_samples", "n_features", "degree", "seed"):
        if key in params:
            low = {"n_samples": 4 if name == "moons" else 2, "n_features": 1}.get(key, 0)
            number(cfg, f"data.{key}", minimum=low, integer=True)
            params[key] = int(params[key])
    if "noise" in params:
        number(cfg, "data.noise", minimum=0)
    if "standardize" in params and not isinstance(params["standardize"], bool):
        raise ConfigError(f"data.standardize: expected true or false, "
                          f"got {_fmt(params['standardize'])}")
    return _call("data", name, loader, **params)


def _check_learning_params(cfg: DictConfig, name: str, params: dict) -> None:
    """Type and range checks of the learning objectives' keys, in the one-line format."""
    if "l2" in params:
        number(cfg, "objective.l2", minimum=0, strict=(name == "logistic"))
    if "init_gain" in params:
        number(cfg, "objective.init_gain", minimum=0, strict=True)
    if "hidden" in params:
        h = params["hidden"]
        if not isinstance(h, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in h):
            raise ConfigError(f"objective.hidden: expected a list of integers > 0, got {_fmt(h)}")
    if "activation" in params and params["activation"] not in ACTIVATIONS:
        raise ConfigError(f"objective.activation: expected one of {', '.join(ACTIVATIONS)}, "
                          f"got {_fmt(params['activation'])}")
    if params.get("loss") is not None and params["loss"] not in LOSSES:
        raise ConfigError(f"objective.loss: expected null or one of {', '.join(LOSSES)}, "
                          f"got {_fmt(params['loss'])}")


def minibatch_options(cfg: DictConfig, objective: Objective) -> dict:
    """descent.run keyword arguments for a learning objective: batches and evaluations."""
    node = cfg.data
    n = objective.n_samples
    batch_size = node.get("batch_size")
    if batch_size is not None:
        ok = isinstance(batch_size, int) and not isinstance(batch_size, bool) \
            and 1 <= batch_size <= n
        if not ok:
            raise ConfigError(f"data.batch_size: expected null or an integer in [1, {n}] "
                              f"(the training samples), got {_fmt(batch_size)}")
    sampling = node.get("sampling", "epoch")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"data.sampling: expected one of {', '.join(SAMPLINGS)}, "
                          f"got {_fmt(sampling)}")
    batches = node.get("batches", "shared")
    if batches not in BATCHES:
        raise ConfigError(f"data.batches: expected one of {', '.join(BATCHES)}, "
                          f"got {_fmt(batches)}")
    eval_every = node.get("eval_every")
    if eval_every is not None:
        eval_every = number(cfg, "data.eval_every", minimum=1, integer=True)
    return {"batch_size": batch_size, "sampling": sampling, "batches": batches,
            "eval_every": eval_every,
            "batch_seed": number(cfg, "seed", minimum=0, integer=True),
            "evaluate": objective.evaluate}


# ---------------------------------------------------------------------------------------------
# Memory: a run is sized from its config before anything is allocated, and refused when it
# cannot fit, instead of growing until the machine kills it.

# memory_limit: null allows this fraction of the machine's memory (or of the cgroup's limit).
MEMORY_FRACTION = 0.8
# The interpreter with numpy, autograd, matplotlib and MLflow loaded.
BASE_BYTES = 400 * 2 ** 20
GB = 1e9


def machine_memory() -> int:
    """Bytes of RAM this process may use: the physical memory, or a smaller cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(Path(path).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return total


def memory_limit(cfg) -> tuple[float, str]:
    """(bytes allowed, how that limit was set) from ``memory_limit`` (GB; null: a fraction of RAM)."""
    if cfg.get("memory_limit") is None:
        ram = machine_memory()
        return MEMORY_FRACTION * ram, (f"memory_limit: null, {MEMORY_FRACTION:.0%} of this "
                                       f"machine's {ram / GB:.1f} GB")
    return number(cfg, "memory_limit", minimum=0, strict=True) * GB, "memory_limit"


def _count_starts(cfg) -> tuple[int, str]:
    """(starts of the batch, the key that sets them) from the validated init and lr keys."""
    init = cfg.init.get("name")
    if init == "grid":
        n, key = number(cfg, "init.k", minimum=1, integer=True), "init.k"
    else:
        n, key = number(cfg, "init.n_starts", minimum=1, integer=True), "init.n_starts"
    # the node, not its value: plain GD's default rate is the objective's own, and resolving
    # it would build the objective this estimate must size first
    lr = OmegaConf.to_container(cfg.optimizer, resolve=False).get("lr")
    rates = len(lr) if isinstance(lr, list) else 1
    return n, key, rates


def memory_estimate(cfg) -> Optional[dict]:
    """Bytes of the run's peak memory by part, with what drives them; None when the values
    it needs are not valid yet (their own checks then report them)."""
    name = cfg.objective.get("name")
    if name not in OBJECTIVES or cfg.optimizer.get("name") not in OPTIMIZERS:
        return None
    params = {k: v for k, v in OmegaConf.to_container(cfg.objective, resolve=True).items()
              if k != "name"}
    try:
        size = footprint_of(OBJECTIVES[name], params)
    except (TypeError, ValueError):
        return None
    d = size.dim
    n, key, rates = _count_starts(cfg)
    if cfg.init.get("name") == "grid":
        n = n ** d
    n *= rates
    opt_params = _params(cfg, "optimizer", OPTIMIZERS[cfg.optimizer.name], skip=("name", "lr"))
    try:
        state = OPTIMIZERS[cfg.optimizer.name](**opt_params).init(np.zeros((1, 1)))
    except (TypeError, ValueError):
        return None
    state_arrays = sum(isinstance(a, np.ndarray) for a in state)
    max_steps = number(cfg, "stop.max_steps", minimum=0, integer=True)
    trace_budget = number(cfg, "trace_budget", minimum=1, integer=True)
    path_budget = number(cfg, "path_budget", minimum=1, integer=True)
    parts = descent.memory_needed(d, n, max_steps=max_steps, trace_budget=trace_budget,
                                  path_budget=path_budget, state_arrays=state_arrays,
                                  per_start=size.per_start)
    parts["objective's constants"] = size.constants
    if cfg.diagnostics.get("enabled") is True:
        curve_rows = descent._rows(max_steps, trace_budget, n)
        path_rows = descent._rows(max_steps, path_budget, d * n)
        targets = cfg.diagnostics.get("targets")
        parts["diagnostics"] = (8 * n * curve_rows + 2 * d * n * path_rows
                                + 2 * n * (len(targets) if OmegaConf.is_list(targets) else 1)
                                + 8 * HESSIAN_BUDGET)
    parts = {k: 8 * v for k, v in parts.items()}
    drivers = {"objective's constants": "objective.dim", "trace": "trace_budget",
               "path": "path_budget"}
    return {"parts": parts, "total": BASE_BYTES + sum(parts.values()), "dim": d, "n": n,
            "starts_key": key if rates == 1 else f"{key} or the optimizer.lr list",
            "drivers": drivers}


def _gb(b: float) -> str:
    return f"{b / GB:.3g} GB" if b < 1e3 * GB else f"{b / GB:.3e} GB"


def check_memory(cfg) -> Optional[int]:
    """Refuse a run whose estimated peak memory exceeds the limit; returns the estimate."""
    est = memory_estimate(cfg)
    if est is None:
        return None
    limit, how = memory_limit(cfg)
    if est["total"] > limit:
        part, size = max(est["parts"].items(), key=lambda kv: kv[1])
        key = est["drivers"].get(part, est["starts_key"])
        raise ConfigError(
            f"memory_limit: this run needs about {_gb(est['total'])} ({part} {_gb(size)}: "
            f"{est['n']} starts x {est['dim']} dimensions), more than the limit of "
            f"{_gb(limit)} ({how}); lower {key}, or raise memory_limit (GB)")
    return est["total"]


def build(cfg: DictConfig) -> Plan:
    """Validate the whole config and build the objects a run needs; raises ConfigError."""
    check_keys(cfg)
    seed = number(cfg, "seed", minimum=0, integer=True)
    check_memory(cfg)
    objective = build_objective(cfg)

    init_name = _choice(cfg, "init", INITS)
    if init_name == "model" and objective.init_model is None:
        raise ConfigError(f"init.name: expected fixed, grid, normal or uniform for objective "
                          f"{objective.name!r} (model is for learning objectives), got 'model'")
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
    if objective.n_samples:
        run_kwargs.update(minibatch_options(cfg, objective))
    diagnostics = diagnostics_options(cfg)
    return Plan(objective, x0, optimizer, lr, schedule, line_search, run_kwargs,
                diagnostics, claim_name(cfg, diagnostics))


def claim_name(cfg: DictConfig, diagnostics: Optional[dict]) -> Optional[str]:
    """The ``claim`` to check after the descent (None: none), refused when unknown or when
    the run would not record what its check reads."""
    from .claims import CLAIMS

    name = cfg.get("claim")
    if name is None:
        return None
    if not isinstance(name, str) or name not in CLAIMS:
        raise ConfigError(f"claim: expected null or one of {', '.join(CLAIMS)}, got {_fmt(name)}")
    needs = CLAIMS[name].needs
    if ("diagnostics" in needs or "sharpness" in needs) and diagnostics is None:
        raise ConfigError(f"diagnostics.enabled: expected true for claim {name}, got false")
    if "sharpness" in needs and not diagnostics["sharpness_every"]:
        raise ConfigError(f"diagnostics.sharpness_every: expected an integer >= 1 for claim "
                          f"{name}, got 0")
    return name


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
    every = number(cfg, "diagnostics.sharpness_every", minimum=0, integer=True)
    tol = number(cfg, "diagnostics.sharpness_tol", minimum=0, strict=True)
    if tol >= 1:
        raise ConfigError(f"diagnostics.sharpness_tol: expected a number in (0, 1), got {tol:g}")
    return {"exponents": targets.tolist(),
            "max_hessian_starts": number(cfg, "diagnostics.max_hessian_starts", minimum=1,
                                         integer=True),
            "sharpness_every": every, "sharpness_tol": tol}


SWEEP_METRICS = ("final_loss", "steps")


def sweep_metric(cfg: DictConfig) -> str:
    """What a sweeper minimises (see pipeline.Outcome.sweep_value)."""
    metric = cfg.get("sweep_metric", "final_loss")
    if metric not in SWEEP_METRICS:
        raise ConfigError(f"sweep_metric: expected one of {', '.join(SWEEP_METRICS)}, "
                          f"got {_fmt(metric)}")
    return metric


@functools.lru_cache(maxsize=None)
def _yaml_writer():
    """libyaml's emitter with OmegaConf's own representers, behind the direct writer of
    plain data (yamltext); None without libyaml."""
    try:
        from omegaconf._utils import get_omega_conf_dumper, is_float, is_int, yaml_is_bool
    except ImportError:  # pragma: no cover - OmegaConf moved them
        return None
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    from .yamltext import Writer

    class Dumper(yaml.CDumper):
        pass

    Dumper.add_representer(str, get_omega_conf_dumper().str_representer)
    return Writer(Dumper, lambda s: yaml_is_bool(s) or is_int(s) or is_float(s))


def to_yaml(node: Any, resolve: bool = False) -> str:
    """``OmegaConf.to_yaml(node, resolve=...)`` written directly where PyYAML would write it
    as it is, and by libyaml elsewhere (yamltext): the same YAML (OmegaConf's quoting of
    strings that would read back as numbers, booleans or null), up to where a long string
    wraps, at a fraction of the cost. A sweep writes five per job."""
    writer = _yaml_writer()
    if writer is None:
        return OmegaConf.to_yaml(node, resolve=resolve)
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=resolve, enum_to_str=True)
    return writer.dump(node)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved."""
    return OmegaConf.to_container(cfg, resolve=True)
