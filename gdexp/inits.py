"""Starting points: each init returns a (d, n) array of starts, seeded by the run's seed."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .objectives import Objective


def _corners(objective: Objective, low, high, box) -> tuple[np.ndarray, np.ndarray]:
    lower = box[0] if low is None else np.broadcast_to(np.asarray(low, float), (objective.dim,))
    upper = box[1] if high is None else np.broadcast_to(np.asarray(high, float), (objective.dim,))
    if np.any(upper < lower):
        raise ValueError(f"high must be >= low in every coordinate, got low={lower.tolist()}, "
                         f"high={upper.tolist()}")
    return np.asarray(lower, float), np.asarray(upper, float)


def fixed(objective: Objective, n_starts: int, rng: np.random.Generator, x0=None) -> np.ndarray:
    """The point ``x0`` repeated ``n_starts`` times.

    ``x0 = None`` starts at the objective's own default start (``objective.start``: zeros for
    linear models, one fixed LeCun draw for an MLP), or else a quarter of the way into the plot
    window from its lower corner, a point away from every listed minimum.
    """
    if x0 is None and objective.start is not None:
        point = np.asarray(objective.start, dtype=float)
    elif x0 is None:
        lower, upper = objective.plot_window
        point = lower + 0.25 * (upper - lower)
    else:
        point = np.asarray(x0, dtype=float).ravel()
        if point.size != objective.dim:
            raise ValueError(f"x0 has length {point.size} but objective {objective.name} has "
                             f"dimension {objective.dim}")
    return np.repeat(point[:, None], n_starts, axis=1)


def uniform(objective: Objective, n_starts: int, rng: np.random.Generator, low=None,
            high=None) -> np.ndarray:
    """Independent uniform draws in the box [low, high] (default: the objective's domain)."""
    lower, upper = _corners(objective, low, high, objective.domain)
    return rng.uniform(lower[:, None], upper[:, None], size=(objective.dim, n_starts))


def normal(objective: Objective, n_starts: int, rng: np.random.Generator, mean=None,
           std=1.0) -> np.ndarray:
    """Independent draws from N(mean, std²·I) (default mean: the centre of the domain)."""
    lower, upper = objective.domain
    mu = (lower + upper) / 2 if mean is None else np.broadcast_to(
        np.asarray(mean, float), (objective.dim,))
    sigma = np.broadcast_to(np.asarray(std, float), (objective.dim,))
    return mu[:, None] + sigma[:, None] * rng.standard_normal((objective.dim, n_starts))


def grid(objective: Objective, n_starts: int, rng: np.random.Generator, k: int = 10, low=None,
         high=None) -> np.ndarray:
    """A regular grid of k points per axis over [low, high] (default: the plot window).

    The grid sets the number of starts itself: n = k^d (``n_starts`` is ignored).
    """
    lower, upper = _corners(objective, low, high, objective.plot_window)
    axes = [np.linspace(lo, hi, k) for lo, hi in zip(lower, upper)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh])


def model(objective: Objective, n_starts: int, rng: np.random.Generator) -> np.ndarray:
    """The model's own initialisation, one independent draw per start (learning objectives:
    LeCun-normal weights, zero biases)."""
    if objective.init_model is None:
        raise ValueError(f"objective {objective.name} has no model initialisation "
                         "(init=model is for least_squares, logistic, mlp)")
    return np.asarray(objective.init_model(rng, n_starts), dtype=float)


INITS: dict[str, Callable[..., np.ndarray]] = {
    "fixed": fixed,
    "uniform": uniform,
    "normal": normal,
    "grid": grid,
    "model": model,
}
