"""Objectives from theory papers on gradient descent: the catapult uv model, Lessard's counterexample, a strict saddle."""
from __future__ import annotations

import math

import autograd.numpy as anp

from .base import Minimum, Objective, _box, _frozen, _int_arg, _real_arg, colsum


def uv(width: int = 1000, target: float = 0.0) -> Objective:
    """The two-layer linear "uv" model on one sample: f(u, v) = ½(vᵀu/√m − y)², x = (u, v).

    m = ``width``, u, v ∈ ℝᵐ, so dim = 2m; the input is 1 and the label y = ``target``. The
    network's curvature (its neural tangent kernel) is λ = (‖u‖² + ‖v‖²)/m, and the loss
    Hessian's largest eigenvalue is λ up to (f − y)/√m. Gradient descent at rate η behaves in
    three ways (Lewkowycz, Bahri, Dyer, Sohl-Dickstein, Gur-Ari, "The large learning rate
    phase of deep learning: the catapult mechanism", 2020): ηλ0 < 2 converges without the loss
    ever rising; 2 < ηλ0 < 4 the loss first grows ("catapult"), λ falls below 2/η and the
    descent then converges at that flatter point; ηλ0 > 4 diverges.
    The minima form the manifold vᵀu = √m·y, none of them isolated (the Hessian there has
    rank 1): no minimum is listed (``minima_complete`` False). Domain [−3, 3]^2m.
    """
    m = _int_arg("width", width, 1)
    y = _real_arg("target", target)
    scale = 1.0 / math.sqrt(m)

    def f(x):
        out = scale * colsum(x[:m] * x[m:]) - y
        return 0.5 * out * out

    lower, upper = _box(-3.0, 3.0, 2 * m)
    return Objective(name="uv", f=f, dim=2 * m, domain=(lower, upper), minima=(),
                     plot_window=(lower, upper), minima_complete=False,
                     params={"width": m, "target": y})


def _lessard_f(x):
    t = x[0]
    return anp.where(t < 1.0, 12.5 * t * t,
                     anp.where(t < 2.0, 0.5 * t * t + 24.0 * t - 12.0,
                               12.5 * t * t - 24.0 * t + 36.0))


def lessard() -> Objective:
    """Lessard, Recht & Packard's one-dimensional counterexample for the heavy-ball method.

        f'(x) = 25x (x < 1),   x + 24 (1 ≤ x < 2),   25x − 24 (x ≥ 2)

    i.e. f = 12.5x², ½x² + 24x − 12, 12.5x² − 24x + 36 on the three pieces (C¹, f'' ∈ {1, 25}):
    strongly convex with m = 1 and L = 25 (κ = 25). Heavy ball with the parameters optimal for
    quadratics with these constants, α = 4/(√L + √m)² = 1/9 and β = ((√κ − 1)/(√κ + 1))² = 4/9,
    started in [3.07, 3.46] (x₋₁ = x₀), never converges: it settles on a cycle of period 3
    (−1.8024, 2.1159, 0.6465). GD with any step below 2/L converges. Reference: L. Lessard,
    B. Recht, A. Packard, "Analysis and design of optimization algorithms via integral
    quadratic constraints", SIAM J. Optim. 26 (2016), §4.6. One minimum, global: 0, f = 0.
    Domain [−5, 5].
    """
    lower, upper = _box(-5.0, 5.0, 1)
    return Objective(name="lessard", f=_lessard_f, dim=1, domain=(lower, upper),
                     minima=(Minimum(_frozen([0.0]), 0.0, True),), plot_window=(lower, upper),
                     minima_complete=True, params={"m": 1.0, "L": 25.0})


def _strict_saddle_f(x):
    return 0.25 * x[0] ** 4 - 0.5 * x[0] ** 2 + 0.5 * x[1] ** 2


def strict_saddle() -> Objective:
    """f(x, y) = ¼x⁴ − ½x² + ½y²: two minima (±1, 0), f = −¼, and a strict saddle at (0, 0).

    At the saddle the Hessian is diag(−1, 1). Its stable manifold is the line x = 0, which a
    gradient step maps into itself exactly (x ← x − η(x³ − x) is 0 at x = 0): starts on it
    converge to the saddle, every other start escapes. Lee, Simchowitz, Jordan & Recht,
    "Gradient descent only converges to minimizers", COLT 2016: with η < 1/L, the starts that
    end at a strict saddle have measure zero. Both minima are global. Domain [−2, 2]².
    """
    lower, upper = _box(-2.0, 2.0, 2)
    minima = tuple(Minimum(_frozen([s, 0.0]), -0.25, True) for s in (-1.0, 1.0))
    return Objective(name="strict_saddle", f=_strict_saddle_f, dim=2, domain=(lower, upper),
                     minima=minima, plot_window=(lower, upper), minima_complete=True,
                     params={"saddles": _frozen([[0.0, 0.0]])})
