"""Shared helpers for the benchmarks: interleaved timing, ratio statistics, configs, temporary stores."""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_START = time.perf_counter()


def say(message: str) -> None:
    """One progress line on stderr, stamped with the seconds since the benchmarks started."""
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def gdexp_command() -> list[str]:
    """The `gdexp` console script next to this interpreter (the venv's), else `python -m gdexp`."""
    script = Path(PYTHON).parent / "gdexp"
    return [str(script)] if script.exists() else [PYTHON, "-m", "gdexp"]


# --- clocks -------------------------------------------------------------------------------

def wall(fn: Callable[[], object]) -> Callable[[], float]:
    """A side that returns its own wall time in seconds."""
    def side():
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return side


def cpu(fn: Callable[[], object]) -> Callable[[], float]:
    """A side that returns its own CPU time (this process) in seconds.

    On a shared machine the wall clock also counts the time other processes hold the cores;
    a single-threaded computation's CPU time does not.
    """
    def side():
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    return side


def run_timed(cmd: list[str], env: Optional[dict] = None, cwd: Optional[Path] = None,
              log: Optional[Path] = None, timeout: float = 3600) -> dict:
    """Run a command to completion; its wall time and the CPU time of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if log is None:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        output = proc.stdout + proc.stderr
    else:
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
        output = None
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        tail = output if output is not None else Path(log).read_text()
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail[-3000:]}")
    return {"wall": elapsed, "cpu": used, "output": output}


# --- interleaving and statistics -------------------------------------------------------------

def interleave(sides: dict[str, Callable[[], float]], rounds: int, label: str = "") -> dict:
    """Run every side once per round, rotating the order each round; seconds per side per round.

    Interleaving puts the sides of a ratio under the same machine load, so the ratio of one
    round's pair is meaningful even when absolute times drift.
    """
    names = list(sides)
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(float(sides[name]()))
        if label:
            say(f"  {label} round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {samples[n][-1]:.3f}s" for n in names))
    return samples


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def paired_ratio(num: list[float], den: list[float], scale: float = 1.0) -> dict:
    """Per-round ratios num/den·scale: their median (the reported figure), spread, and the
    ratio of the two sides' minimums as a cross-check."""
    ratios = [scale * a / b for a, b in zip(num, den)]
    return {"ratio": statistics.median(ratios), "per_round": ratios,
            "min_ratio": min(ratios), "max_ratio": max(ratios),
            "ratio_of_minimums": scale * min(num) / min(den)}


def goal(gid: str, title: str, ratio: float, target: float, op: str, *, unit: str = "",
         details: Optional[dict] = None) -> dict:
    """One row of the results table; ``op`` is '<=' or '>='."""
    passed = ratio <= target if op == "<=" else ratio >= target
    return {"id": gid, "goal": title, "ratio": ratio, "target": target, "op": op,
            "pass": bool(passed), "unit": unit, "details": details or {}}


def goal_line(row: dict, extra: str = "") -> str:
    """A goal row in one line, for a benchmark run alone: id, goal, ratio, target, met."""
    return (f"{row['id']}  {row['goal']}: {row['ratio']:.4g}  (target {row['op']} "
            f"{row['target']:.4g})  {'met' if row['pass'] else 'MISSED'}  {extra}").rstrip()


# --- configs and stores -----------------------------------------------------------------------

_hydra_ready = False


def compose(overrides: list[str]):
    """The job config `gdexp run OVERRIDES` would get (without the `hydra` key)."""
    global _hydra_ready
    from hydra import compose as hydra_compose, initialize_config_dir

    from gdexp.config import CONF_DIR, register_resolvers

    if not _hydra_ready:
        register_resolvers()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench")
        _hydra_ready = True
    return hydra_compose(config_name="config", overrides=list(overrides))


def sqlite_uri(folder: Path) -> str:
    """An absolute sqlite URI for ``folder/mlflow.db`` (artifacts go to ``folder/mlartifacts``)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def prepare_store(uri: str, experiment: str) -> str:
    """Create and migrate the store and the experiment (untimed set-up); the experiment id."""
    from gdexp import tracking

    tracking.check_uri(uri)
    return tracking.ensure_experiment(tracking.client(uri), experiment, uri)


def machine() -> dict:
    """What the numbers were measured on."""
    import platform

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_average": load}


def bare_gd(f: Callable, x0, lr: float, steps: int) -> Callable[[], object]:
    """The baseline of the per-step goals: `x -= lr·g` with autograd's value_and_grad alone."""
    from autograd import value_and_grad

    def bare():
        vg = value_and_grad(f)
        x = x0.copy()
        for _ in range(steps):
            _, g = vg(x)
            x = x - lr * g
        return x

    return bare
