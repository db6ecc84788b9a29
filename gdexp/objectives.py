"""Test functions for gradient descent: formulas, domains and every known minimum."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import autograd.numpy as anp
import numpy as np


@dataclass(frozen=True)
class Minimum:
    """A known local minimum: its location, its value and whether it is global."""

    x: np.ndarray
    value: float
    is_global: bool


@dataclass(frozen=True)
class Objective:
    """A test function written over axis 0.

    ``f(x)`` takes ``x`` of shape ``(dim,)`` and returns a scalar, or ``(dim, n)`` and returns
    shape ``(n,)``: one point or a batch of points, the same code.
    """

    name: str
    f: Callable
    dim: int
    domain: tuple[np.ndarray, np.ndarray]  # lower and upper corner of the search box
    minima: tuple[Minimum, ...]
    plot_window: tuple[np.ndarray, np.ndarray]
    minima_complete: bool = True  # False when more minima exist than are listed
    params: dict = field(default_factory=dict)

    @property
    def global_minima(self) -> tuple[Minimum, ...]:
        return tuple(m for m in self.minima if m.is_global)

    @property
    def f_min(self) -> float:
        return min(m.value for m in self.global_minima)


def _box(lower, upper, dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(dim, float(lower)), np.full(dim, float(upper))


def quadratic(dim: int = 2, eigenvalues=None, condition: float = 10.0, center=None,
              rotate: bool = False, rotation_seed: int = 0) -> Objective:
    """Convex quadratic f(x) = ½ (x − c)ᵀ A (x − c).

    A = Q diag(λ) Qᵀ with λ = ``eigenvalues`` if given, else ``dim`` values spaced
    geometrically from 1 to ``condition``; Q = I, or a seeded random orthogonal matrix when
    ``rotate``. Domain [−5, 5]^d around c. One minimum, global: x = c, f = 0.
    Gradient descent is stable iff 0 < lr < 2/λmax; at lr = 2/(λmax + λmin) the error
    contracts by (κ − 1)/(κ + 1) per step, κ = λmax/λmin.
    """
    if eigenvalues is None:
        lam = np.geomspace(1.0, float(condition), int(dim)) if dim > 1 else np.array([1.0])
    else:
        lam = np.asarray(list(eigenvalues), dtype=float)
        dim = lam.size
    if rotate:
        rng = np.random.default_rng(rotation_seed)
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))
    else:
        q = np.eye(dim)
    a = (q * lam) @ q.T
    c = np.zeros(dim) if center is None else np.asarray(list(center), dtype=float)

    def f(x):
        y = x - (c if x.ndim == 1 else c[:, None])
        return 0.5 * anp.sum(y * anp.dot(a, y), axis=0)

    lower, upper = c - 5.0, c + 5.0
    return Objective(
        name="quadratic", f=f, dim=int(dim), domain=(lower, upper),
        minima=(Minimum(c, 0.0, True),), plot_window=(lower, upper),
        params={"A": a, "eigenvalues": lam, "center": c},
    )


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "quadratic": quadratic,
}
