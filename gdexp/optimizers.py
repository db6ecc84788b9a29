"""Update rules: each optimizer is a pair of pure functions (init, update).

Every rule follows ``torch.optim`` (formulas, defaults, order of operations); the
docstrings say where optax or ``autograd.misc.optimizers`` differ. Every ``update`` is
linear in ``lr``: the state never depends on ``lr`` and the returned step is ``lr`` times
a direction, so a line search may call ``update(g, state, x, 1.0)`` and scale the step.
(This is also why a changing rate, from a schedule or a line search, acts like PyTorch's:
PyTorch too keeps ``lr`` out of its buffers.)

Weight decay, when nonzero, is PyTorch's coupled L2 form: g ← g + weight_decay·x before
anything else (not AdamW's decoupled decay).

Each optimizer also carries its ``Stability``: the largest curvature λ for which its update,
run on the 1-D quadratic f(x) = ½λx² at a constant rate, does not blow up. That is the line
sharpness is compared with (2/lr only for plain GD); tests/test_optimizers.py iterates each
recursion just below and just above it.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from .checks import flag, real


class Stability(NamedTuple):
    """Where an update rule turns unstable on f(x) = ½λx²: iff lr·(λ + weight_decay) ≥ limit.

    ``limit`` is the largest stable lr·λ of the rule's own linear recursion (2 for GD);
    ``weight_decay`` shifts the curvature the rule sees (g + wd·x = (λ + wd)·x). ``limit`` None
    means no fixed threshold exists, and ``rule`` says why; otherwise ``rule`` is the formula.
    """

    limit: Optional[float]
    weight_decay: float
    rule: str

    def threshold(self, lr):
        """The largest stable curvature λ of f at rate ``lr`` (scalar or array); None if none."""
        if self.limit is None:
            return None
        return self.limit / np.asarray(lr, dtype=float) - self.weight_decay

    def stable_lr(self, curvature):
        """The largest stable rate at curvature λ: limit / (λ + wd); inf where λ + wd ≤ 0."""
        if self.limit is None:
            return None
        c = np.asarray(curvature, dtype=float) + self.weight_decay
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(c > 0, self.limit / np.where(c > 0, c, 1.0), np.inf)
        return np.where(np.isnan(c), np.nan, out)


_UNKNOWN = Stability(None, 0.0, "none: no stability threshold was derived for this rule")


class Optimizer(NamedTuple):
    """``init(x) -> state``; ``update(g, state, x, lr) -> (step, state)``; its ``stability``.

    The runner applies ``x ← x + step``. Arrays are (d, n) batches; ``lr`` is a scalar or a
    (n,) vector of per-column rates, so broadcasting over the last axis does the rest.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
    stability: Stability = _UNKNOWN


class EmptyState(NamedTuple):
    """State of an optimizer that keeps none."""


class MomentumState(NamedTuple):
    """Momentum buffer b (zeros before the first step) and the number of updates done."""

    buf: np.ndarray
    count: int


class AdagradState(NamedTuple):
    """Running sum of squared gradients and the number of updates done."""

    sum: np.ndarray
    count: int


class RMSpropState(NamedTuple):
    """EMA of g², EMA of g (``centered`` only, else None), momentum buffer (else None)."""

    square_avg: np.ndarray
    grad_avg: Optional[np.ndarray]
    buf: Optional[np.ndarray]


class AdamState(NamedTuple):
    """First and second moment EMAs, running max of the second (``amsgrad`` only), count."""

    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    max_exp_avg_sq: Optional[np.ndarray]
    count: int


# --------------------------------------------------------------------------- validation

def _decayed(g, x, weight_decay: float):
    """PyTorch's coupled weight decay g + wd·x (skipped at wd = 0, as PyTorch does)."""
    return g + weight_decay * x if weight_decay else g


def _zeros(x) -> np.ndarray:
    return np.zeros(np.shape(x), dtype=float)


# --------------------------------------------------------------------------- optimizers

def gd() -> Optimizer:
    """Plain gradient descent: step = −lr·g.

    Stability: x ← (1 − lr·λ)·x contracts iff |1 − lr·λ| < 1, i.e. lr·λ < 2.
    """

    def init(x):
        return EmptyState()

    def update(g, state, x, lr):
        return -lr * g, state

    return Optimizer(init, update, Stability(2.0, 0.0, "2/lr"))


def _sgd_stability(mu: float, tau: float, wd: float, nesterov: bool) -> Stability:
    """The threshold of PyTorch's SGD recursion on ½λx² (a = lr·(λ + wd), see the docstrings)."""
    if mu == 0.0:
        return Stability(2.0, wd, "2/lr - weight_decay" if wd else "2/lr")
    if nesterov:
        return Stability((2 + 2 * mu) / (1 + 2 * mu), wd,
                         "(2 + 2*momentum)/((1 + 2*momentum)*lr)" + (" - weight_decay" if wd else ""))
    if tau == 1.0:
        return Stability(None, wd, "none: with dampening 1 the buffer ignores every gradient "
                                   "after the first, so the iterate drifts instead of "
                                   "responding to curvature")
    return Stability((2 + 2 * mu) / (1 - tau), wd,
                     "(2 + 2*momentum)/((1 - dampening)*lr)" + (" - weight_decay" if wd else ""))


def _sgd(momentum: float, dampening: float, weight_decay: float, nesterov: bool) -> Optimizer:
    def init(x):
        return MomentumState(_zeros(x), 0)

    def update(g, state, x, lr):
        g = _decayed(g, x, weight_decay)
        if momentum == 0.0:  # PyTorch keeps no buffer then: plain (decayed) gradient step
            return -lr * g, MomentumState(state.buf, state.count + 1)
        if state.count == 0:
            buf = np.array(g, dtype=float)  # first step: b₁ = g, undamped
        else:
            buf = momentum * state.buf + (1.0 - dampening) * g
        d = g + momentum * buf if nesterov else buf
        return -lr * d, MomentumState(buf, state.count + 1)

    return Optimizer(init, update, _sgd_stability(momentum, dampening, weight_decay, nesterov))


def momentum(momentum: float = 0.9, dampening: float = 0.0,
             weight_decay: float = 0.0) -> Optimizer:
    """Heavy-ball momentum, as ``torch.optim.SGD(momentum=μ, dampening=τ, nesterov=False)``.

        g ← g + weight_decay·x
        b₁ = g;   b_k = μ·b_{k−1} + (1 − τ)·g_k   (k ≥ 2)
        step = −lr·b_k

    The buffer holds gradients, not steps: ``lr`` multiplies it afresh every step, so a
    change of ``lr`` rescales the whole accumulated velocity at once. Other conventions:
    Sutskever et al. / Keras keep v ← μ·v − lr·g (lr inside the buffer; identical for a
    constant lr, different under a schedule or line search); optax ``sgd(momentum=μ)``
    matches PyTorch with τ = 0; ``autograd.misc.optimizers.sgd`` uses v ← μ·v − (1 − μ)·g
    from v₀ = 0, i.e. τ = μ *and* a damped first step. With μ = 0 this is ``gd`` (τ
    ignored, as in PyTorch).

    Stability: on ½λx², with a = lr·(1 − τ)·(λ + wd), the iterates obey
    x_{k+1} = (1 + μ − a)·x_k − μ·x_{k−1} (b₁ = g is the τ = 0 recursion from b₀ = 0). Both
    roots of z² − (1 + μ − a)z + μ lie inside the unit circle iff 0 < a < 2 + 2μ, so the
    threshold is λ < (2 + 2μ)/((1 − τ)·lr) − wd; at τ = 1 there is none (see ``rule``).

    μ ∈ [0, 1), τ ∈ [0, 1], weight_decay ≥ 0.
    """
    mu = real("momentum", momentum, 0.0, 1.0)
    tau = real("dampening", dampening, 0.0, 1.0, hi_open=False)
    wd = real("weight_decay", weight_decay, 0.0)
    return _sgd(mu, tau, wd, nesterov=False)


def nesterov(momentum: float = 0.9, dampening: float = 0.0,
             weight_decay: float = 0.0) -> Optimizer:
    """Nesterov momentum, as ``torch.optim.SGD(momentum=μ, nesterov=True)``.

        g ← g + weight_decay·x
        b₁ = g;   b_k = μ·b_{k−1} + g_k   (k ≥ 2)
        step = −lr·(g_k + μ·b_k)

    This is the Sutskever et al. look-ahead rewritten at the current iterate (the gradient
    is taken at x_k, not at x_k + μ·v); optax ``sgd(momentum=μ, nesterov=True)`` is the
    same. Keras' ``SGD(nesterov=True)`` keeps lr inside the buffer (same for a constant lr).

    As in PyTorch, Nesterov momentum requires μ ∈ (0, 1) and dampening = 0 (the
    ``dampening`` key exists only so the config mirrors ``momentum``); weight_decay ≥ 0.

    Stability: on ½λx² with a = lr·(λ + wd), the state (x_k, b_{k−1}) maps linearly with
    trace 1 + μ − a(1 + μ) and determinant μ(1 − a). The Jury conditions give a > 0 and
    2 + 2μ − a(1 + 2μ) > 0, so the threshold is λ < (2 + 2μ)/((1 + 2μ)·lr) − wd: lower than
    GD's 2/lr for every μ > 0 (the look-ahead term adds μ·b to each step).
    """
    mu = real("momentum", momentum, 0.0, 1.0, lo_open=True,
               why=" for nesterov (PyTorch requires momentum > 0)")
    if not (isinstance(dampening, Real) and not isinstance(dampening, bool)
            and float(dampening) == 0.0):
        raise ValueError(f"dampening must be 0 for nesterov (as in PyTorch), got {dampening!r}")
    wd = real("weight_decay", weight_decay, 0.0)
    return _sgd(mu, 0.0, wd, nesterov=True)


def adagrad(lr_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            weight_decay: float = 0.0) -> Optimizer:
    """Adagrad, as ``torch.optim.Adagrad``.

        g ← g + weight_decay·x
        s_k = s_{k−1} + g_k²,   s₀ = initial_accumulator_value
        step = −lr / (1 + (k − 1)·lr_decay) · g_k / (√s_k + eps)       (k = 1, 2, …)

    ``lr_decay`` scales lr inside the update exactly as PyTorch does; it is a factor
    independent of lr, so the update stays linear in lr. The factor is on top of any
    schedule passed to the runner (the two multiply).
    optax ``adagrad`` differs: initial_accumulator_value = 0.1, eps = 1e-7 *inside* the
    square root, g/√(s + eps) (and 0 where s = 0), no lr_decay.

    lr_decay ≥ 0, initial_accumulator_value ≥ 0, eps > 0, weight_decay ≥ 0.
    """
    decay = real("lr_decay", lr_decay, 0.0)
    s0 = real("initial_accumulator_value", initial_accumulator_value, 0.0)
    eps = real("eps", eps, 0.0, lo_open=True)
    wd = real("weight_decay", weight_decay, 0.0)

    def init(x):
        return AdagradState(np.full(np.shape(x), s0, dtype=float), 0)

    def update(g, state, x, lr):
        g = _decayed(g, x, wd)
        count = state.count + 1
        s = state.sum + g * g
        factor = 1.0 / (1.0 + (count - 1) * decay)
        return -(lr * factor) * (g / (np.sqrt(s) + eps)), AdagradState(s, count)

    return Optimizer(init, update, Stability(
        None, wd, "none: the step is lr*g/sqrt(sum of g^2), at most lr per coordinate whatever "
                  "the curvature, and its effective rate lr/sqrt(s_k) shrinks as s_k grows, so "
                  "the threshold moves with the gradient history"))


def rmsprop(alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
            centered: bool = False, weight_decay: float = 0.0) -> Optimizer:
    """RMSprop, as ``torch.optim.RMSprop``.

        g ← g + weight_decay·x
        v_k = α·v_{k−1} + (1 − α)·g_k²,   v₀ = 0
        centered: m_k = α·m_{k−1} + (1 − α)·g_k, m₀ = 0, and D_k = √(v_k − m_k²) + eps;
        else D_k = √v_k + eps
        μ = 0: step = −lr·g_k / D_k
        μ > 0: b_k = μ·b_{k−1} + g_k / D_k, b₀ = 0; step = −lr·b_k

    No bias correction: with v₀ = 0 the first steps are larger than lr (the first is
    lr/√(1 − α) per coordinate, 10·lr at α = 0.99). eps is outside the square root.
    Other conventions: optax ``rmsprop`` defaults to decay 0.9 and puts eps inside the root
    (g/√(v + eps)); Keras uses rho = 0.9, eps = 1e-7; ``autograd.misc.optimizers.rmsprop``
    starts from v₀ = 1 with γ = 0.9.

    α ∈ [0, 1), eps > 0, momentum ∈ [0, 1), weight_decay ≥ 0.
    """
    a = real("alpha", alpha, 0.0, 1.0)
    eps = real("eps", eps, 0.0, lo_open=True)
    mu = real("momentum", momentum, 0.0, 1.0)
    centered = flag("centered", centered)
    wd = real("weight_decay", weight_decay, 0.0)

    def init(x):
        return RMSpropState(_zeros(x), _zeros(x) if centered else None,
                            _zeros(x) if mu > 0 else None)

    def update(g, state, x, lr):
        g = _decayed(g, x, wd)
        v = a * state.square_avg + (1.0 - a) * (g * g)
        if centered:
            m = a * state.grad_avg + (1.0 - a) * g
            denom = np.sqrt(v - m * m) + eps
        else:
            m = None
            denom = np.sqrt(v) + eps
        if mu > 0:
            buf = mu * state.buf + g / denom
            return -lr * buf, RMSpropState(v, m, buf)
        return -lr * (g / denom), RMSpropState(v, m, None)

    return Optimizer(init, update, Stability(
        None, wd, "none: the step is lr*g/sqrt(EMA of g^2), bounded by lr/sqrt(1 - alpha) per "
                  "coordinate whatever the curvature; stability is a property of the "
                  "preconditioned Hessian diag(1/(sqrt(v)+eps))*H, which moves with v"))


def adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
         amsgrad: bool = False) -> Optimizer:
    """Adam, as ``torch.optim.Adam`` (betas = (beta1, beta2)).

        g ← g + weight_decay·x                    (L2, not AdamW's decoupled decay)
        m_k = β₁·m_{k−1} + (1 − β₁)·g_k,   v_k = β₂·v_{k−1} + (1 − β₂)·g_k²,   m₀ = v₀ = 0
        amsgrad: u_k = max(u_{k−1}, v_k), u₀ = 0, else u_k = v_k
        step = −lr/(1 − β₁ᵏ) · m_k / (√u_k / √(1 − β₂ᵏ) + eps)        (k = 1, 2, …)

    eps is added after the bias correction of √u (the ε̂ of Kingma & Ba's Algorithm 1 is
    thus applied to √v̂); optax ``adam`` (eps_root = 0) and ``autograd.misc.optimizers.adam``
    compute the same. For amsgrad PyTorch takes the max over the raw v and divides by the
    current correction; optax ``amsgrad`` takes the max over the corrected v̂ instead.

    β₁, β₂ ∈ [0, 1), eps > 0, weight_decay ≥ 0.
    """
    b1 = real("beta1", beta1, 0.0, 1.0)
    b2 = real("beta2", beta2, 0.0, 1.0)
    eps = real("eps", eps, 0.0, lo_open=True)
    wd = real("weight_decay", weight_decay, 0.0)
    amsgrad = flag("amsgrad", amsgrad)

    def init(x):
        return AdamState(_zeros(x), _zeros(x), _zeros(x) if amsgrad else None, 0)

    def update(g, state, x, lr):
        g = _decayed(g, x, wd)
        count = state.count + 1
        m = b1 * state.exp_avg + (1.0 - b1) * g
        v = b2 * state.exp_avg_sq + (1.0 - b2) * (g * g)
        u = np.maximum(state.max_exp_avg_sq, v) if amsgrad else v
        c1 = 1.0 - b1 ** count
        c2 = math.sqrt(1.0 - b2 ** count)
        denom = np.sqrt(u) / c2 + eps
        step = -(lr / c1) * (m / denom)
        return step, AdamState(m, v, u if amsgrad else None, count)

    return Optimizer(init, update, Stability(
        None, wd, "none: the step is lr*m_hat/sqrt(v_hat), bounded per coordinate whatever the "
                  "curvature; stability is a property of the preconditioned Hessian "
                  "diag(1/(sqrt(v_hat)+eps))*H, which moves with v"))


def stacked(blocks) -> Optimizer:
    """Consecutive blocks of columns, each updated by its own optimizer: ``blocks`` is a list
    of (optimizer, number of columns). Block b's step and state are what its optimizer
    computes on its own columns, which is what it computes for them alone: every rule is
    elementwise over the columns. This is how a batched sweep descends jobs with different
    optimizers or constants (momentum, betas) together. Its ``stability`` is unknown: each
    block has its own."""
    optimizers = [opt for opt, _ in blocks]
    edges = np.cumsum([0] + [int(n) for _, n in blocks])
    cols = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def init(x):
        return tuple(opt.init(x[:, c]) for opt, c in zip(optimizers, cols))

    def update(g, state, x, lr):
        per_column = np.ndim(lr) > 0
        out = [opt.update(g[:, c], s, x[:, c], lr[c] if per_column else lr)
               for opt, c, s in zip(optimizers, cols, state)]
        return np.concatenate([step for step, _ in out], axis=1), tuple(s for _, s in out)

    return Optimizer(init, update)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "gd": gd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
}
