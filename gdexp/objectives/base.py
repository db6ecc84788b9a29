"""What every objective is (Objective, Minimum), argument checks, and the numerical tools
used to build objectives and to keep each start's numbers independent of its batch."""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import autograd.numpy as anp
import numpy as np
from autograd import grad as _ag_grad
from autograd import hessian as _ag_hessian

# Separable objectives have (minima per coordinate)^dim minima; list them all only up to this
# many (2^10: styblinski_tang and multi_well up to dim 10). Beyond it the list holds the global
# minimum and its nearest neighbours, and minima_complete is False.
MAX_LISTED_MINIMA = 1024


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
    # Learning objectives (model + loss over a data set) also set these. ``f(x, idx)`` then
    # takes the indices of a mini-batch of training samples; ``idx=None`` is the full batch.
    n_samples: int = 0                       # training samples f averages over; 0: f takes no idx
    start: Optional[np.ndarray] = None       # default start of init=fixed without x0
    init_model: Optional[Callable] = None    # (rng, n_starts) -> (dim, n): the model's own init
    evaluate: Optional[Callable] = None      # x (dim, n) -> {name: (n,)}: test_loss, accuracy...
    dataset: Optional[dict] = None           # identity of the data: name, shapes, digest
    constants: dict = field(default_factory=dict)  # exact facts from the build (L, mu)
    # x (dim, n) -> (v (dim, n) -> H v per column): exact Hessian-vector products of the
    # full-batch f where the objective has them cheaper than autograd's trace (None: autograd).
    hvp_at: Optional[Callable] = None
    # A plain-GD learning rate that gives a sensible first run (no divergence, steady
    # progress) from ``start``: about 1/λmax of the Hessian at the global minimum, where the
    # stable bound is 2/λmax. What `optimizer=gd` uses unless optimizer.lr is set.
    lr: float = 0.01

    @property
    def global_minima(self) -> tuple[Minimum, ...]:
        return tuple(m for m in self.minima if m.is_global)

    @property
    def f_min(self) -> float:
        return min(m.value for m in self.global_minima)


@dataclass(frozen=True)
class Footprint:
    """What an objective will cost in memory, known from its parameters before it is built,
    counted in float64 values. ``per_start`` covers one evaluation of f and its gradient
    (autograd keeps every intermediate array for the backward pass)."""

    dim: int
    constants: int = 0   # arrays it builds and keeps (a dense d x d matrix: several d²)
    per_start: int = 0   # values per start of one evaluation of f and its gradient


# Per start and coordinate, an elementwise objective's evaluation with its gradient keeps
# about 10 values (measured with tracemalloc: 5 to 9 at n = 1000); twice that, for margin.
ELEMENTWISE_VALUES = 20


def footprint(estimate: Callable[..., Footprint]):
    """Decorator: ``estimate(**params) -> Footprint`` becomes the factory's ``footprint``.
    A factory without one is estimated by ``footprint_of`` from its ``dim`` alone."""
    def attach(factory):
        factory.footprint = estimate
        return factory
    return attach


# A separable objective lists up to MAX_LISTED_MINIMA minima of d coordinates, with a few
# copies while they are found and sorted: values per coordinate.
LISTED_MINIMA_VALUES = 4 * MAX_LISTED_MINIMA


def elementwise(constants_per_coordinate: int = 0) -> Callable[..., Footprint]:
    """The estimate of an objective of ``dim`` coordinates that works coordinate-wise."""
    def estimate(dim=2, **_) -> Footprint:
        d = _int_arg("dim", dim, 1)
        return Footprint(d, constants_per_coordinate * (d + 1), ELEMENTWISE_VALUES * (d + 1))
    return estimate


def footprint_of(factory: Callable, params: dict) -> Footprint:
    """The factory's own estimate for ``params``, or an elementwise objective of its ``dim``."""
    if hasattr(factory, "footprint"):
        return factory.footprint(**params)
    import inspect

    default = inspect.signature(factory).parameters.get("dim")
    dim = params.get("dim", default.default if default is not None else 2)
    return elementwise()(dim=dim)


# ----------------------------------------------------------------------------------------------
# Argument checks: every message names the parameter, the bad value and what is allowed.

def _show(value) -> str:
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return str(value.item() if isinstance(value, np.generic) else value)
    return repr(value)


def _int_arg(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_show(value)}")
    return int(value)


# No parameter of a built-in objective means anything beyond this magnitude, and its square
# (every objective has one) must stay finite in float64.
MAX_MAGNITUDE = 1e100


def _real_arg(name: str, value, ok: Callable[[float], bool] = lambda v: True,
              allowed: str = "a finite number") -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not ok(float(value))):
        raise ValueError(f"{name} must be {allowed}, got {_show(value)}")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError(f"{name} must be {allowed} of magnitude <= {MAX_MAGNITUDE:g}, "
                         f"got {_show(value)}")
    return float(value)


def _bool_arg(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {_show(value)}")
    return bool(value)


def _vector_arg(name: str, value, size: Optional[int] = None) -> np.ndarray:
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a list of finite numbers, got {value!r}")
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"{name} must be a list of finite numbers, got {_show(value)}") from None
    if not items or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                            and math.isfinite(v) for v in items):
        raise ValueError(f"{name} must be a non-empty list of finite numbers, got {items}")
    if size is not None and len(items) != size:
        raise ValueError(f"{name} must have {size} values (one per dimension), "
                         f"got {len(items)}: {items}")
    return np.asarray(items, dtype=float)


# ----------------------------------------------------------------------------------------------
# Small numerical tools, used when an objective is built.

def _frozen(a) -> np.ndarray:
    """A read-only float copy (minima and boxes are shared; nobody may change them)."""
    out = np.array(a, dtype=float)
    out.setflags(write=False)
    return out


def _box(lower, upper, dim: int) -> tuple[np.ndarray, np.ndarray]:
    return _frozen(np.full(dim, float(lower))), _frozen(np.full(dim, float(upper)))


def _column(v: np.ndarray, x):
    """``v`` (one value per coordinate) shaped to broadcast against ``x`` ((d,) or (d, n))."""
    return v if x.ndim == 1 else np.reshape(v, (-1,) + (1,) * (x.ndim - 1))


def _roots_between(fun: Callable, edges: np.ndarray) -> np.ndarray:
    """Roots of ``fun``, monotone between consecutive ``edges``: one per sign change.

    Vectorised bisection down to adjacent floats, so each root is exact to machine precision
    (up to the rounding of ``fun`` itself).
    """
    lo, hi = np.asarray(edges[:-1], float), np.asarray(edges[1:], float)
    flo, fhi = fun(lo), fun(hi)
    keep = np.sign(flo) * np.sign(fhi) < 0
    lo, hi, flo = lo[keep], hi[keep], flo[keep]
    for _ in range(2100):  # bisection on floats ends well before this
        mid = 0.5 * (lo + hi)
        live = (mid > lo) & (mid < hi) & (hi - lo > 2e-16 * np.maximum(np.abs(lo), np.abs(hi)))
        if not live.any():
            break
        fm = fun(mid)
        hit = live & (fm == 0)
        right = live & (np.sign(fm) == np.sign(flo))  # the root lies in [mid, hi]
        lo = np.where(right | hit, mid, lo)
        flo = np.where(right, fm, flo)
        hi = np.where((live & ~right) | hit, mid, hi)
    return np.where(np.abs(fun(lo)) <= np.abs(fun(hi)), lo, hi)


def _depressed_cubic_minima(alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Local minima of g with g'(t) = alpha·t³ + beta·t + gamma (alpha > 0), sorted.

    g'' = 3·alpha·t² + beta vanishes at ±sqrt(−beta/(3·alpha)); g' is monotone between those
    points and the Cauchy bound on its roots, so each root is bracketed exactly once. Minima
    are the roots where g' increases: the outer two when there are three, else the only one.
    """
    bound = 1.0 + max(abs(beta), abs(gamma)) / alpha
    turn = math.sqrt(-beta / (3 * alpha)) if beta < 0 else 0.0
    edges = np.array([-bound, -turn, turn, bound]) if turn > 0 else np.array([-bound, bound])
    roots = _roots_between(lambda t: (alpha * t * t + beta) * t + gamma, edges)
    return roots[3 * alpha * roots ** 2 + beta > 0]


def _check_minimum(f: Callable, x: np.ndarray, name: str, grad_tol: float = 1e-7) -> None:
    """Raise if ``x`` is not a strict local minimum of ``f`` (small gradient, PD Hessian)."""
    g = _ag_grad(f)(x)
    h = _ag_hessian(f)(x)
    eig = np.linalg.eigvalsh(0.5 * (h + h.T))
    scale = max(1.0, float(np.max(np.abs(eig))))
    if not (np.linalg.norm(g) <= grad_tol * scale and eig[0] > 1e-10 * scale):
        raise RuntimeError(f"{name}: computed point {x} is not a local minimum "
                           f"(|grad| = {np.linalg.norm(g):.3g}, Hessian eigenvalues {eig})")


def _newton_stationary(gradient: Callable, hessian: Callable, x0, name: str,
                       max_iter: int = 40) -> np.ndarray:
    """Newton's method on ∇f = 0 from a good approximation, to machine precision.

    Stops when the gradient norm has not decreased for two steps (rounding level reached).
    """
    x = np.array(x0, dtype=float)
    best, best_norm, stalled = x, np.inf, 0
    for _ in range(max_iter):
        gx = gradient(x)
        gn = float(np.linalg.norm(gx))
        if gn < best_norm:
            best, best_norm, stalled = x, gn, 0
        else:
            stalled += 1
        if gn == 0.0 or stalled >= 2:
            break
        x = x - np.linalg.solve(hessian(x), gx)
    if not best_norm <= 1e-8 * (1.0 + np.max(np.abs(hessian(best)))):
        raise RuntimeError(f"{name}: Newton from {x0} did not converge (|grad| = {best_norm:.3g})")
    return best


def _minimum(f: Callable, x, is_global: bool) -> Minimum:
    x = _frozen(x)
    return Minimum(x, float(f(x)), bool(is_global))


def _sorted_minima(minima) -> tuple[Minimum, ...]:
    """Global minima first, then by value."""
    return tuple(sorted(minima, key=lambda m: (not m.is_global, m.value)))


def _separable_minima(f: Callable, per_coord: Sequence[np.ndarray],
                      global_index: Sequence[Sequence[int]],
                      ) -> tuple[tuple[Minimum, ...], bool]:
    """Minima of f(x) = Σ_i g_i(x_i) from the minima of each g_i.

    The Hessian of a separable function is diagonal, so x is a local minimum iff every x_i is
    a local minimum of g_i, and global iff every x_i is global for g_i. ``per_coord[i]`` holds
    the sorted minima of g_i, ``global_index[i]`` the indices of its global ones. All
    products are listed when there are at most MAX_LISTED_MINIMA of them; otherwise the global
    minimum and its neighbours (one coordinate moved to an adjacent minimum of its g_i).
    Returns (minima, whether all products were listed).
    """
    dim = len(per_coord)
    count = math.prod(len(p) for p in per_coord)
    if count <= MAX_LISTED_MINIMA:
        combos = list(itertools.product(*(range(len(p)) for p in per_coord)))
        complete = True
    else:
        base = tuple(gi[0] for gi in global_index)
        combos = [base]
        for i in range(dim):
            for j in (base[i] - 1, base[i] + 1):
                if 0 <= j < len(per_coord[i]):
                    combos.append(base[:i] + (j,) + base[i + 1:])
        complete = False
    points = np.array([[per_coord[i][c[i]] for i in range(dim)] for c in combos]).T  # (d, k)
    values = np.asarray(f(points), dtype=float)
    minima = []
    for j, c in enumerate(combos):
        x = _frozen(points[:, j])
        is_global = all(c[i] in global_index[i] for i in range(dim))
        minima.append(Minimum(x, float(values[j]), is_global))
    return _sorted_minima(minima), complete


def _global_indices(values: np.ndarray) -> list[int]:
    low = np.min(values)
    return [int(i) for i in np.flatnonzero(values <= low + 1e-14 * max(1.0, abs(low)))]



# ----------------------------------------------------------------------------------------------
# Reductions whose rounding does not depend on how many starts share the batch.
#
# numpy sums an axis that is innermost and contiguous pairwise (8-way unrolled blocks), and
# any other axis sequentially. A single start, x of shape (d,), has its summed axis innermost,
# a batch (d, n >= 2) has it outermost, so ``x.sum(axis=0)`` rounds differently for one start
# than for the same start in a batch; BLAS (``A @ x`` vs ``A @ X``) differs for every n. A
# cumulative sum is sequential whatever the layout, so ``colsum`` rounds each column in the
# same order for every n, and ``contract`` builds a matrix product from it. The registry test
# checks values and gradients of every objective at n = 1, 2, 7 and 100.

def colsum(t, axis: int = 0):
    """Sum over ``axis`` (an axis other than the starts' last one), sequentially in index order."""
    c = anp.cumsum(t, axis=axis)
    return c[(slice(None),) * (axis % t.ndim) + (-1,)]


def contract(a: np.ndarray, y):
    """``a @ y`` for a constant (k, d) matrix and y of shape (d,) or (d, n), summed over d in
    index order for every column (no BLAS), so a column's result does not depend on n."""
    if y.ndim == 1:
        return colsum(a * y[None, :], axis=1)
    return colsum(a[:, :, None] * y[None, :, :], axis=1)
