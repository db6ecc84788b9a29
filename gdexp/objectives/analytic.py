"""Analytic test functions for gradient descent: formulas, domains and every known minimum.

Every objective is written over axis 0: ``f(x)`` takes ``x`` of shape ``(dim,)`` and returns a
scalar, or ``(dim, n)`` and returns shape ``(n,)``. The functions use ``autograd.numpy`` only
(no in-place ops, no element assignment), so autograd differentiates them.

Listed minima are computed when the objective is built, to machine precision: closed forms
where they exist; for separable functions, the roots of each coordinate's derivative,
bracketed on intervals where it is monotone and bisected (minimal by construction: the
Hessian is diagonal); for the 2-D functions, Newton's method on ∇f = 0 from a published
approximation; for Rosenbrock, damped Newton searches. The value listed is always ``f`` at
the point; the non-separable ones are checked at build time for a ~0 gradient and a positive
definite Hessian. ``minima_complete`` says whether the list holds every local minimum of ``f``
on the whole space (not just the domain).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import autograd.numpy as anp
import numpy as np

from .base import (ELEMENTWISE_VALUES, LISTED_MINIMA_VALUES, MAX_LISTED_MINIMA, Footprint,
                   Minimum, Objective, _bool_arg, elementwise, footprint, _box, _column,
                   _depressed_cubic_minima, _frozen, _global_indices, _int_arg, _minimum,
                   _newton_stationary, _real_arg, _roots_between, _separable_minima,
                   _sorted_minima, _vector_arg, _check_minimum, colsum, contract)


def _rate_for(curvature: float) -> float:
    """1/curvature to one significant digit (1/1001.6 -> 0.001): about half the stable bound
    2/λmax of gradient descent (at most 1.5/λmax after rounding), as one would type it."""
    return float(f"{1.0 / curvature:.0e}")


def _quadratic_size(dim=2, eigenvalues=None, rotate=False, **_) -> Footprint:
    d = len(eigenvalues) if isinstance(eigenvalues, (list, tuple)) else _int_arg("dim", dim, 1)
    # Building A = Q diag(λ) Qᵀ holds Q, the QR factors, Q·λ and A: about five d x d arrays.
    # Rotated, f contracts A with every start, a (d, d, n) product and its cumulative sum.
    return Footprint(d, 6 * d * d, (6 * d * d if rotate is True else 0)
                     + ELEMENTWISE_VALUES * (d + 1))


@footprint(_quadratic_size)
def quadratic(dim: int = 2, eigenvalues=None, condition: float = 10.0, center=None,
              rotate: bool = False, rotation_seed: int = 0) -> Objective:
    """Convex quadratic f(x) = ½ (x − c)ᵀ A (x − c).

    A = Q diag(λ) Qᵀ with λ = ``eigenvalues`` if given (then they set the dimension and
    ``dim`` is ignored), else ``dim`` values spaced geometrically from 1 to ``condition``;
    Q = I, or a seeded random orthogonal matrix when ``rotate``. Domain [−5, 5]^d around c.
    One minimum, global: x = c, f = 0. Gradient descent is stable iff 0 < lr < 2/λmax; at
    lr = 2/(λmax + λmin) the error contracts by (κ − 1)/(κ + 1) per step, κ = λmax/λmin.
    Reference: Nocedal & Wright, Numerical Optimization (2006), §3.3.
    """
    if eigenvalues is None:
        dim = _int_arg("dim", dim, 1)
        # beyond 1e12 float64 no longer resolves λmin next to λmax (and GD's rate 1/λmax
        # needs more than 1e12 steps to move along λmin)
        condition = _real_arg("condition", condition, lambda v: 1.0 <= v <= 1e12,
                              "a number in [1, 1e12] (λmax/λmin)")
        lam = np.geomspace(1.0, condition, dim)
    else:
        lam = _vector_arg("eigenvalues", eigenvalues)
        if np.any(lam <= 0):
            raise ValueError(f"eigenvalues must all be > 0 (A positive definite), "
                             f"got {np.asarray(eigenvalues, dtype=float).tolist()}")
        dim = lam.size
    rotate = _bool_arg("rotate", rotate)
    rotation_seed = _int_arg("rotation_seed", rotation_seed, 0)
    if rotate:
        rng = np.random.default_rng(rotation_seed)
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))
    else:
        q = np.eye(dim)
    a = _frozen((q * lam) @ q.T)
    c = _frozen(np.zeros(dim) if center is None else _vector_arg("center", center, dim))

    def f(x):
        y = x - _column(c, x)
        return 0.5 * colsum(y * (contract(a, y) if rotate else _column(lam, y) * y))

    lower, upper = _frozen(c - 5.0), _frozen(c + 5.0)
    return Objective(
        name="quadratic", f=f, dim=int(dim), domain=(lower, upper),
        minima=(Minimum(c, 0.0, True),), plot_window=(lower, upper),
        params={"A": a, "eigenvalues": _frozen(lam), "center": c},
        lr=float(1.0 / lam.max()),
    )


def _rosenbrock_parts(a: float, b: float):
    """Value, gradient and Hessian (tridiagonal: its diagonal and off-diagonal) of the
    chained Rosenbrock function, in plain numpy."""

    def value(x):
        return float(np.sum(b * (x[1:] - x[:-1] ** 2) ** 2 + (a - x[:-1]) ** 2))

    def gradient(x):
        r = x[1:] - x[:-1] ** 2
        g = np.zeros_like(x)
        g[:-1] += -4 * b * x[:-1] * r - 2 * (a - x[:-1])
        g[1:] += 2 * b * r
        return g

    def hessian_bands(x):
        r = x[1:] - x[:-1] ** 2
        diag = np.zeros(x.size)
        diag[:-1] += -4 * b * r + 8 * b * x[:-1] ** 2 + 2
        diag[1:] += 2 * b
        return diag, -4 * b * x[:-1]

    return value, gradient, hessian_bands


def _tridiagonal_pivots(diag: np.ndarray, off: np.ndarray) -> Optional[np.ndarray]:
    """Pivots of the LDLᵀ factorisation of a symmetric tridiagonal matrix, or None when the
    matrix is not positive definite (a pivot ≤ 0)."""
    piv = np.empty_like(diag)
    piv[0] = diag[0]
    if not piv[0] > 0:
        return None
    for i in range(1, diag.size):
        piv[i] = diag[i] - off[i - 1] ** 2 / piv[i - 1]
        if not piv[i] > 0:
            return None
    return piv


def _tridiagonal_solve(piv: np.ndarray, off: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve T x = rhs given the LDLᵀ pivots of T (see ``_tridiagonal_pivots``)."""
    n = rhs.size
    y = np.empty(n)
    y[0] = rhs[0]
    for i in range(1, n):
        y[i] = rhs[i] - off[i - 1] / piv[i - 1] * y[i - 1]
    x = np.empty(n)
    x[-1] = y[-1] / piv[-1]
    for i in range(n - 2, -1, -1):
        x[i] = y[i] / piv[i] - off[i] / piv[i] * x[i + 1]
    return x


def _rosenbrock_is_minimum(gradient, hessian_bands, x) -> bool:
    """Gradient zero to rounding level and Hessian positive definite."""
    diag, off = hessian_bands(x)
    scale = max(1.0, float(np.max(np.abs(diag))), float(np.max(np.abs(off), initial=0.0)))
    piv = _tridiagonal_pivots(diag, off)
    return (piv is not None and float(np.min(piv)) > 1e-10 * scale
            and float(np.linalg.norm(gradient(x))) <= 1e-9 * scale)


def _newton_minimize(value, gradient, hessian_bands, x0,
                     max_evals: int = 3000) -> Optional[np.ndarray]:
    """Levenberg–Marquardt-damped Newton descent for a function with a tridiagonal Hessian:
    steps −(H + μI)⁻¹∇f, μ raised until H + μI is positive definite and the step lowers f,
    lowered after each success, 0 near a minimum (then plain Newton, quadratic convergence).

    Returns a point where the gradient vanishes to rounding level and the Hessian is positive
    definite, or None if the search did not get there (e.g. it ended on a saddle).
    """
    x = np.array(x0, dtype=float)
    mu, evals = 0.0, 0
    fx = value(x)
    while evals < max_evals:
        g = gradient(x)
        diag, off = hessian_bands(x)
        mu_floor = 1e-8 * max(1.0, float(np.max(np.abs(diag))))
        while evals < max_evals:
            piv = _tridiagonal_pivots(diag + mu, off)
            if piv is None:
                mu = max(4.0 * mu, mu_floor)
                continue
            p = -_tridiagonal_solve(piv, off, g)
            small = np.linalg.norm(p) <= 1e-13 * (1.0 + np.linalg.norm(x))
            f_new = value(x + p)
            evals += 1
            if f_new < fx or small:
                break
            mu = max(4.0 * mu, mu_floor)
        x, fx = x + p, f_new
        if small:
            break
        mu = 0.0 if mu <= 4.0 * mu_floor else mu / 8.0
    # Polish: f stops decreasing at rounding level while ∇f may still be ~sqrt(eps); plain
    # Newton steps on ∇f = 0, kept while the gradient norm decreases, reach machine precision.
    g = gradient(x)
    for _ in range(30):
        piv = _tridiagonal_pivots(*hessian_bands(x))
        if piv is None:
            break
        x_new = x - _tridiagonal_solve(piv, hessian_bands(x)[1], g)
        g_new = gradient(x_new)
        if not np.linalg.norm(g_new) < np.linalg.norm(g):
            break
        x, g = x_new, g_new
    return x if _rosenbrock_is_minimum(gradient, hessian_bands, x) else None


# Newton searches from up to 14 points, each holding a few banded d-vectors
@footprint(elementwise(64))
def rosenbrock(dim: int = 2, a: float = 1.0, b: float = 100.0) -> Objective:
    """Chained Rosenbrock f(x) = Σ_{i=1}^{d−1} b (x_{i+1} − x_i²)² + (a − x_i)², d ≥ 2.

    Domain [−2.048, 2.048]^d (De Jong), widened if a minimum lies outside; plot window
    [−2, 2] × [−1, 3] for d = 2 and a = 1. The minimum sits at the bottom of a long curved
    valley: gradient descent needs lr < 2/λmax ≈ 2/1001.6 at the standard minimum and then
    crawls along the valley.

    Minima:
    * d = 2: one, global, at (a, a²), f = 0, for any a and b > 0 (the only stationary point).
    * a = 1 (any b > 0): global minimum (1, …, 1), f = 0. a = 0: global minimum 0, f = 0.
      For d ≥ 3 and any other a, (a, a², …) is NOT a minimum (the term (a − x₂)² would be
      (a − a²)² > 0): the global minimum has f > 0 and no closed form. It is then taken as
      the lowest of several damped Newton searches (listed as global, but not certified;
      ``params['global_certified']`` is False).
    * Standard a = 1, b = 100: d = 3 has only the global minimum; for 4 ≤ d ≤ 7 there is exactly
      one more, non-global, near (−1, 1, …, 1) (d = 4: (−0.7757, 0.6131, 0.3821, 0.1460),
      f = 3.7014; f → ≈3.987 as d grows). Shang & Qiu (2006) and Kok & Sandrock (2009) found
      only these two minima numerically up to d = 30 and d = 100, among many saddle points,
      but that is not a proof: for d ≥ 8 the list holds both and ``minima_complete`` is False.
    * Other a or b with d ≥ 3: the searches above (from (−1, 1, …, 1) and a few more starts)
      list what they find; ``minima_complete`` is False.
    Every listed point is refined by Newton's method to machine precision and checked.

    References: H. H. Rosenbrock, "An automatic method for finding the greatest or least value
    of a function", The Computer Journal 3 (1960); Y.-W. Shang & Y.-H. Qiu, "A note on the
    extended Rosenbrock function", Evolutionary Computation 14 (2006); S. Kok & C. Sandrock,
    "Locating and characterizing the stationary points of the extended Rosenbrock function",
    Evolutionary Computation 17 (2009).
    """
    dim = _int_arg("dim", dim, 2)
    # Beyond these the Hessian at the minimum (condition ≈ b·a²) is past what float64 resolves:
    # its small eigenvalue, and so the minimum's check, drown in rounding.
    a = _real_arg("a", a, lambda v: abs(v) <= 1e3, "a number in [-1000, 1000]")
    b = _real_arg("b", b, lambda v: 0 < v <= 1e8, "a number in (0, 1e8]")
    found, global_certified = _rosenbrock_minima(dim, a, b)

    def f(x):
        head, tail = x[:-1], x[1:]
        return colsum(b * (tail - head ** 2) ** 2 + (a - head) ** 2)

    _, gradient, hessian_bands = _rosenbrock_parts(a, b)
    minima = []
    for x, is_global in found:
        if not _rosenbrock_is_minimum(gradient, hessian_bands, x):
            raise RuntimeError(f"rosenbrock: computed point {x} is not a local minimum")
        minima.append(_minimum(f, x, is_global))
    standard = a == 1.0 and b == 100.0
    complete = dim == 2 or (standard and dim <= 7)

    pts = np.stack([m.x for m in minima])
    lower = np.minimum(-2.048, pts.min(axis=0) - 1.0)
    upper = np.maximum(2.048, pts.max(axis=0) + 1.0)
    if dim == 2:
        s = max(1.0, abs(a))
        win_lo = np.minimum([-2.0 * s, -s * s], pts.min(axis=0) - 1.0)
        win_hi = np.maximum([2.0 * s, 3.0 * s * s], pts.max(axis=0) + 1.0)
    else:
        win_lo, win_hi = lower, upper
    return Objective(
        name="rosenbrock", f=f, dim=dim, domain=(_frozen(lower), _frozen(upper)),
        minima=_sorted_minima(minima), plot_window=(_frozen(win_lo), _frozen(win_hi)),
        minima_complete=complete,
        params={"a": a, "b": b, "global_certified": global_certified},
        lr=_rate_for(_tridiagonal_max(*hessian_bands(next(m.x for m in minima if m.is_global)))),
    )


def _tridiagonal_max(diag: np.ndarray, off: np.ndarray) -> float:
    """λmax of a symmetric tridiagonal matrix: exact up to 400 rows, else Gershgorin's bound."""
    if diag.size <= 400:
        return float(np.linalg.eigvalsh(np.diag(diag) + np.diag(off, 1) + np.diag(off, -1))[-1])
    radius = np.zeros_like(diag)
    radius[:-1] += np.abs(off)
    radius[1:] += np.abs(off)
    return float(np.max(diag + radius))


@functools.lru_cache(maxsize=64)
def _rosenbrock_minima(dim: int, a: float, b: float):
    """[(x, is_global)] and whether the global one is certified; see ``rosenbrock``."""
    value, gradient, hessian_bands = _rosenbrock_parts(a, b)
    if dim == 2:
        return ((np.array([a, a * a]), True),), True
    known = None
    if a == 1.0:
        known = np.ones(dim)
    elif a == 0.0:
        known = np.zeros(dim)
    alt = np.ones(dim)
    alt[0] = -1.0
    starts = [alt]
    if known is None:
        rng = np.random.default_rng(0)
        chain = np.clip(a ** (2.0 ** np.arange(dim)), -abs(a) - 2, abs(a) + 2)
        starts += [np.full(dim, a), chain, np.ones(dim), np.zeros(dim), -np.ones(dim)]
        starts += list(rng.uniform(-2.048, 2.048, size=(8, dim)))
    found = [] if known is None else [known]
    for s in starts:
        x = _newton_minimize(value, gradient, hessian_bands, s)
        if x is not None and all(np.linalg.norm(x - y) > 1e-6 * (1 + np.linalg.norm(y))
                                 for y in found):
            found.append(x)
    if known is not None:
        return tuple((x, i == 0) for i, x in enumerate(found)), True
    values = np.array([value(x) for x in found])
    glob = set(_global_indices(values))
    return tuple((x, i in glob) for i, x in enumerate(found)), False


@footprint(elementwise(LISTED_MINIMA_VALUES))
def multi_well(dim: int = 2, tilt: float = 0.5, tilt_ratio: float = 0.5,
               height: float = 1.0) -> Objective:
    """Tilted double wells, one per coordinate: f(x) = Σ_i height·(x_i² − 1)² + c_i·x_i.

    c_i = tilt · tilt_ratio^i (i = 0, 1, …): each coordinate has two wells near ±1, the one on
    the side opposite the sign of c_i deeper by ≈ 2|c_i|, separated by a barrier ≈ height at
    0. Two wells need |c_i| < 8·height/(3√3) ≈ 1.5396·height, so |tilt| must be below that.

    Minima: per coordinate, the outer two roots of g′(t) = 4·height·t³ − 4·height·t + c_i (a
    cubic), bracketed and bisected to machine precision; f is separable, so its minima are
    all 2^d combinations (1-D: 2 wells; 2-D: 4 wells, default depths ≈ −0.75, −0.25, 0.25,
    0.75), and exactly one is global when tilt ≠ 0 (all coordinates in their deeper well;
    tilt = 0 makes all 2^d global). With the default tilt_ratio = 0.5 the well depths act like
    binary digits and all 2^d values differ; tilt_ratio = 1 makes wells with the same number
    of coordinates on the shallow side equally deep. All are listed up to d = 10; beyond, the
    global one and its d neighbours (one coordinate in the other well), with
    ``minima_complete`` False.
    Domain and plot window [−2, 2]^d. ``params['tilts']`` holds the c_i.

    Reference: the tilted double-well (Landau) quartic, e.g. Wales, Energy Landscapes (2003).
    """
    dim = _int_arg("dim", dim, 1)
    height = _real_arg("height", height, lambda v: v > 0, "a finite number > 0")
    crit = 8.0 * height / (3.0 * math.sqrt(3.0))
    tilt = _real_arg("tilt", tilt, lambda v: abs(v) < crit,
                     f"a number with |tilt| < 8·height/(3√3) = {crit:.6g} (two wells)")
    tilt_ratio = _real_arg("tilt_ratio", tilt_ratio, lambda v: 0 < v <= 1,
                           "a number in (0, 1]")
    tilts = _frozen(tilt * tilt_ratio ** np.arange(dim))

    def f(x):
        c = _column(tilts, x)
        return colsum(height * (x ** 2 - 1.0) ** 2 + c * x)

    def g(t, c):
        return height * (t * t - 1.0) ** 2 + c * t

    per_coord, glob = [], []
    for c in tilts:
        m = _depressed_cubic_minima(4 * height, -4 * height, float(c))
        per_coord.append(m)
        glob.append(_global_indices(g(m, c)))
    minima, complete = _separable_minima(f, per_coord, glob)
    lower, upper = _box(-2.0, 2.0, dim)
    return Objective(
        name="multi_well", f=f, dim=dim, domain=(lower, upper), minima=minima,
        plot_window=(lower, upper), minima_complete=complete,
        params={"tilts": tilts, "height": height},
    )


def _himmelblau_f(x):
    u, v = x[0], x[1]
    return (u ** 2 + v - 11.0) ** 2 + (u + v ** 2 - 7.0) ** 2


def _himmelblau_grad(x):
    p, q = x[0] ** 2 + x[1] - 11.0, x[0] + x[1] ** 2 - 7.0
    return np.array([4.0 * x[0] * p + 2.0 * q, 2.0 * p + 4.0 * x[1] * q])


def _himmelblau_hess(x):
    p, q = x[0] ** 2 + x[1] - 11.0, x[0] + x[1] ** 2 - 7.0
    off = 4.0 * (x[0] + x[1])
    return np.array([[4.0 * p + 8.0 * x[0] ** 2 + 2.0, off],
                     [off, 4.0 * q + 8.0 * x[1] ** 2 + 2.0]])


@functools.lru_cache(maxsize=1)
def _himmelblau_points():
    approx_min = [(-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)]
    approx_saddle = [(0.086677, 2.884255), (-3.073025, -0.081353), (3.385154, 0.073852),
                     (-0.127961, -1.953715)]

    def refine(p):
        return _newton_stationary(_himmelblau_grad, _himmelblau_hess, p, "himmelblau")

    mins = [np.array([3.0, 2.0])] + [refine(p) for p in approx_min]  # (3, 2) is exact
    return mins, [refine(p) for p in approx_saddle], refine((-0.270845, -0.923039))


def himmelblau() -> Objective:
    """Himmelblau's function f(x, y) = (x² + y − 11)² + (x + y² − 7)².

    Domain and plot window [−5, 5]². Four minima, all global with f = 0: (3, 2) exactly, and
    ≈ (−2.805118, 3.131312), (−3.779310, −3.283186), (3.584428, −1.848126), refined by Newton to
    machine precision (their values are then ~1e-30, not exactly 0). The other stationary
    points are a local maximum ≈ (−0.270845, −0.923039), f ≈ 181.617, and four saddles; they
    are in ``params['maximum']`` and ``params['saddles']``. f is a quartic polynomial with
    exactly nine stationary points, so the list of minima is complete.
    Reference: D. M. Himmelblau, Applied Nonlinear Programming, McGraw-Hill (1972).
    """
    mins, saddles, maximum = _himmelblau_points()
    minima = [_minimum(_himmelblau_f, x, True) for x in mins]
    for m in minima:
        _check_minimum(_himmelblau_f, m.x, "himmelblau")
    lower, upper = _box(-5.0, 5.0, 2)
    return Objective(
        name="himmelblau", f=_himmelblau_f, dim=2, domain=(lower, upper),
        minima=tuple(minima), plot_window=(lower, upper), minima_complete=True,
        params={"saddles": tuple(_frozen(s) for s in saddles), "maximum": _frozen(maximum)},
    )


@footprint(elementwise(LISTED_MINIMA_VALUES))
def styblinski_tang(dim: int = 2) -> Objective:
    """Styblinski–Tang f(x) = ½ Σ_i (x_i⁴ − 16 x_i² + 5 x_i).

    Domain and plot window [−5, 5]^d. Separable: per coordinate g′(t) = 2t³ − 16t + 2.5 has
    roots ≈ −2.903534 (global min, g ≈ −39.166166), 0.156731 (max) and 2.746803 (local min,
    g ≈ −25.03), bisected to machine precision. So f has 2^d minima, one global at
    (−2.903534, …), f_min ≈ −39.16617·d. All 2^d are listed up to d = 10; beyond, the global
    one and its d neighbours (one coordinate at 2.746803), with ``minima_complete`` False.
    Reference: M. A. Styblinski & T.-S. Tang, "Experiments in nonconvex optimization:
    stochastic approximation with function smoothing and simulated annealing", Neural
    Networks 3 (1990).
    """
    dim = _int_arg("dim", dim, 1)

    def f(x):
        return 0.5 * colsum(x ** 4 - 16.0 * x ** 2 + 5.0 * x)

    m = _depressed_cubic_minima(2.0, -16.0, 2.5)
    glob = _global_indices(0.5 * (m ** 4 - 16 * m ** 2 + 5 * m))
    minima, complete = _separable_minima(f, [m] * dim, [glob] * dim)
    lower, upper = _box(-5.0, 5.0, dim)
    return Objective(
        name="styblinski_tang", f=f, dim=dim, domain=(lower, upper), minima=minima,
        plot_window=(lower, upper), minima_complete=complete,
        params={"coordinate_minima": _frozen(m)},
    )


# Müller–Brown: V = Σ_k A_k exp(a_k (x − x0_k)² + b_k (x − x0_k)(y − y0_k) + c_k (y − y0_k)²)
_MB_A = (-200.0, -100.0, -170.0, 15.0)
_MB_a = (-1.0, -1.0, -6.5, 0.7)
_MB_b = (0.0, 0.0, 11.0, 0.6)
_MB_c = (-10.0, -10.0, -6.5, 0.7)
_MB_X0 = (1.0, 0.0, -0.5, -1.0)
_MB_Y0 = (0.0, 0.5, 1.5, 1.0)


def _muller_brown_f(x):
    total = 0.0
    for k in range(4):
        dx, dy = x[0] - _MB_X0[k], x[1] - _MB_Y0[k]
        total = total + _MB_A[k] * anp.exp(_MB_a[k] * dx ** 2 + _MB_b[k] * dx * dy
                                           + _MB_c[k] * dy ** 2)
    return total


def _muller_brown_derivatives(x):
    """Analytic gradient and Hessian: term E = A·exp(q) has ∇E = E∇q, ∇²E = E(∇q∇qᵀ + ∇²q)."""
    g, h = np.zeros(2), np.zeros((2, 2))
    for k in range(4):
        dx, dy = x[0] - _MB_X0[k], x[1] - _MB_Y0[k]
        e = _MB_A[k] * math.exp(_MB_a[k] * dx ** 2 + _MB_b[k] * dx * dy + _MB_c[k] * dy ** 2)
        dq = np.array([2.0 * _MB_a[k] * dx + _MB_b[k] * dy, _MB_b[k] * dx + 2.0 * _MB_c[k] * dy])
        g = g + e * dq
        h = h + e * (np.outer(dq, dq) + np.array([[2.0 * _MB_a[k], _MB_b[k]],
                                                  [_MB_b[k], 2.0 * _MB_c[k]]]))
    return g, h


@functools.lru_cache(maxsize=1)
def _muller_brown_points():
    approx_min = [(-0.5582, 1.4417), (0.6235, 0.0280), (-0.0500, 0.4667)]
    approx_saddle = [(-0.8220, 0.6243), (0.2124, 0.2930)]

    def refine(p):
        return _newton_stationary(lambda x: _muller_brown_derivatives(x)[0],
                                  lambda x: _muller_brown_derivatives(x)[1], p, "muller_brown")

    return [refine(p) for p in approx_min], [refine(p) for p in approx_saddle]


def muller_brown() -> Objective:
    """Müller–Brown potential
    V(x, y) = Σ_{k=1}^{4} A_k exp(a_k (x − x0_k)² + b_k (x − x0_k)(y − y0_k) + c_k (y − y0_k)²),
    with the standard parameters A = (−200, −100, −170, 15),
    a = (−1, −1, −6.5, 0.7), b = (0, 0, 11, 0.6), c = (−10, −10, −6.5, 0.7), x0 = (1, 0, −0.5, −1),
    y0 = (0, 0.5, 1.5, 1).

    Domain and plot window [−1.5, 1.2] × [−0.2, 2.0] (the usual view). Three minima, refined by
    Newton to machine precision: (−0.5582, 1.4417) V = −146.70 (global), (0.6235, 0.0280)
    V = −108.17, (−0.0500, 0.4667) V = −80.77; two saddles between them, ≈ (−0.8220, 0.6243)
    V ≈ −40.66 and (0.2124, 0.2930) V ≈ −72.25, in ``params['saddles']``. The positive fourth
    term dominates far away, so V → +∞ and these are all the minima (also checked by many
    local searches over [−3, 3]²). Values are large: stable learning rates are ~1e-4.
    Reference: K. Müller & L. D. Brown, "Location of saddle points and minimum energy paths by
    a constrained simplex optimization procedure", Theoretica Chimica Acta 53 (1979).
    """
    mins, saddles = _muller_brown_points()
    minima = [_minimum(_muller_brown_f, x, i == 0) for i, x in enumerate(mins)]
    for m in minima:
        _check_minimum(_muller_brown_f, m.x, "muller_brown")
    lower, upper = _frozen([-1.5, -0.2]), _frozen([1.2, 2.0])
    return Objective(
        name="muller_brown", f=_muller_brown_f, dim=2, domain=(lower, upper),
        minima=tuple(minima), plot_window=(lower, upper), minima_complete=True,
        params={"A": _MB_A, "a": _MB_a, "b": _MB_b, "c": _MB_c, "x0": _MB_X0, "y0": _MB_Y0,
                "saddles": tuple(_frozen(s) for s in saddles)},
        lr=_rate_for(np.linalg.eigvalsh(_muller_brown_derivatives(mins[0])[1])[-1]),
    )


def _booth_f(x):
    u, v = x[0], x[1]
    return (u + 2.0 * v - 7.0) ** 2 + (2.0 * u + v - 5.0) ** 2


def booth() -> Objective:
    """Booth's function f(x, y) = (x + 2y − 7)² + (2x + y − 5)².

    A convex quadratic: Hessian [[10, 8], [8, 10]], eigenvalues 2 and 18, so gradient descent
    diverges for lr > 1/9. Domain and plot window [−10, 10]². One minimum, global: (1, 3), f = 0.
    Reference: M. Jamil & X.-S. Yang, "A literature survey of benchmark functions for global
    optimization problems", Int. J. Math. Modelling and Numerical Optimisation 4 (2013).
    """
    lower, upper = _box(-10.0, 10.0, 2)
    return Objective(
        name="booth", f=_booth_f, dim=2, domain=(lower, upper),
        minima=(_minimum(_booth_f, [1.0, 3.0], True),), plot_window=(lower, upper),
        minima_complete=True, params={"hessian": _frozen([[10.0, 8.0], [8.0, 10.0]])},
    )


@functools.lru_cache(maxsize=16)
def _rastrigin_coordinate_minima(a: float) -> np.ndarray:
    """All local minima on ℝ of g(t) = t² + a(1 − cos 2πt), sorted.

    g′(t) = 2t + 2πa sin 2πt has no root with |t| > πa; g″(t) = 2 + 4π²a cos 2πt vanishes at
    t = k ± arccos(−1/(2π²a))/(2π), and between those points g′ is monotone: each root is
    bracketed exactly once and bisected. Minima are the roots where g″ > 0.
    """
    def dg(t):
        return 2.0 * t + 2.0 * math.pi * a * np.sin(2.0 * math.pi * t)

    bound = math.pi * a + 1.0
    ratio = 1.0 / (2.0 * math.pi ** 2 * a)
    if ratio >= 1.0:  # g'' > 0 everywhere: g is convex, the only minimum is 0
        return np.array([0.0])
    c0 = math.acos(-ratio) / (2.0 * math.pi)
    k = np.arange(-math.ceil(bound) - 1, math.ceil(bound) + 2)
    edges = np.concatenate([k - c0, k + c0])
    edges = np.sort(np.concatenate([edges[np.abs(edges) < bound], [-bound, bound]]))
    roots = _roots_between(dg, edges)
    mins = roots[2.0 + 4.0 * math.pi ** 2 * a * np.cos(2.0 * math.pi * roots) > 0]
    return np.where(np.abs(mins) < 1e-300, 0.0, mins)


@footprint(elementwise(LISTED_MINIMA_VALUES))
def rastrigin(dim: int = 2, a: float = 10.0) -> Objective:
    """Rastrigin f(x) = a·d + Σ_i (x_i² − a cos 2πx_i), written as Σ_i x_i² + a(1 − cos 2πx_i).

    Domain and plot window [−5.12, 5.12]^d. Global minimum 0 at the origin. f is separable;
    per coordinate the local minima sit near every integer k with |k| ≲ πa (for a = 10:
    k = −31 … 31, 63 minima, 11 of them in [−5.12, 5.12]), slightly pulled towards 0, with value
    ≈ k²·2π²a/(1 + 2π²a) (≈ 0.995·k² for a = 10); each is bracketed exactly and bisected to
    machine precision (see ``_rastrigin_coordinate_minima``).
    Listed:
    * every minimum on ℝ^d when there are at most MAX_LISTED_MINIMA (a = 10: d = 1);
      ``minima_complete`` True;
    * otherwise every minimum inside the domain when there are at most that many (a = 10:
      d = 2, 121 minima); ``minima_complete`` False (more lie outside the domain);
    * otherwise the global minimum and its 2d lattice neighbours (one coordinate at ±1);
      ``minima_complete`` False.
    ``params['coordinate_minima']`` holds the per-coordinate minima on ℝ, from which any other
    minimum is a combination. For a < 1/(2π²) ≈ 0.0507 f is convex with the single minimum 0.
    Reference: L. A. Rastrigin, Systems of Extremal Control (1974); n-D form by H. Mühlenbein,
    M. Schomisch & J. Born, "The parallel genetic algorithm as function optimizer", Parallel
    Computing 17 (1991).
    """
    dim = _int_arg("dim", dim, 1)
    # the local minima per coordinate grow with a (≈ 0.6 s to list them at 1e4, a minute at 1e6)
    a = _real_arg("a", a, lambda v: 0 < v <= 1e4, "a number in (0, 10000]")
    two_pi = 2.0 * math.pi

    def f(x):
        return colsum(x ** 2 + a * (1.0 - anp.cos(two_pi * x)))

    per = _rastrigin_coordinate_minima(a)
    lower, upper = _box(-5.12, 5.12, dim)
    inside = per[np.abs(per) <= 5.12]
    if len(per) ** dim <= MAX_LISTED_MINIMA:
        chosen, complete = per, True
    elif len(inside) ** dim <= MAX_LISTED_MINIMA:
        chosen, complete = inside, False
    else:
        chosen, complete = per, False
    glob = [int(np.argmin(np.abs(chosen)))]
    minima, listed_all = _separable_minima(f, [chosen] * dim, [glob] * dim)
    return Objective(
        name="rastrigin", f=f, dim=dim, domain=(lower, upper), minima=minima,
        plot_window=(lower, upper), minima_complete=complete and listed_all,
        params={"a": a, "coordinate_minima": _frozen(per)},
        lr=_rate_for(2.0 + 4.0 * np.pi ** 2 * a),  # f'' per coordinate peaks at the integers
    )


def _beale_f(x):
    u, v = x[0], x[1]
    return ((1.5 - u + u * v) ** 2 + (2.25 - u + u * v ** 2) ** 2
            + (2.625 - u + u * v ** 3) ** 2)


def beale() -> Objective:
    """Beale's function f(x, y) = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)².

    Domain and plot window [−4.5, 4.5]². One minimum, global: (3, 0.5), f = 0 (all three terms
    vanish). No other local minimum was found (bounded and unbounded quasi-Newton searches
    from a 46 × 46 grid of starts over the domain); (0, 1) is a degenerate saddle on the line
    x = 0, where f ≡ 14.203125. Beware a valley escaping to x → −∞ along y → 1 in which f
    decreases towards ≈ 0.452 without reaching a minimum: descent started at x < 0 can drift
    out of the domain (f ≈ 0.76 where the valley crosses x = −4.5). ``minima_complete`` is
    True in the sense that no other minimum on ℝ² is known (a numerical finding, not a proof).
    Reference: E. M. L. Beale, "On an iterative method for finding a local minimum of a
    function of more than one variable", Tech. Report 25, Statistical Techniques Research
    Group, Princeton University (1958).
    """
    lower, upper = _box(-4.5, 4.5, 2)
    return Objective(
        name="beale", f=_beale_f, dim=2, domain=(lower, upper),
        minima=(_minimum(_beale_f, [3.0, 0.5], True),), plot_window=(lower, upper),
        minima_complete=True,
        # 1/λmax at the minimum (λ = 0.30, 48.98); from (1, 1), east of the escaping valley
        lr=_rate_for(48.98), start=_frozen([1.0, 1.0]),
    )
