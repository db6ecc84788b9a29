"""Learning objectives: a model and a loss over a data set (least squares, logistic, MLP), written
over axis 0 like every objective, with mini-batch indices, exact minima where math gives them and
exact Hessian-vector products in plain numpy."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import autograd.numpy as anp
import numpy as np

from .base import Minimum, Objective, _frozen, _real_arg, colsum
from .data import CLASSIFICATION, REGRESSION, Dataset, dataset_or_default

ACTIVATIONS = ("tanh", "relu", "softplus")
LOSSES = ("mse", "cross_entropy")

# Batch independence. The starts become the leading axis of a stacked matrix product:
# weights (n, p_in, p_out) times activations (n, m, p_in). numpy's matmul runs one BLAS call
# per start on a (m, p_in) x (p_in, p_out) block whose shape and layout do not depend on n, so
# a start's numbers are the same alone or in any batch (the registry test checks n = 1, 2, 7,
# 100). The per-sample losses are then averaged over the innermost contiguous axis, which
# numpy sums the same way for every row. Unlike colsum/contract, this keeps BLAS speed (the
# mlp benchmark in benchmarks/ measures both).


class _Net:
    """A fully connected network on flattened parameters: per layer W (in, out), then b (out)."""

    def __init__(self, sizes: Sequence[int], activation: str):
        self.sizes = tuple(int(s) for s in sizes)
        self.shapes = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.dim = sum(a * b + b for a, b in self.shapes)
        self.activation = activation

    def layers(self, x):
        """x (d, n) -> per layer (W (n, in, out), b (n, 1, out)), each block C-contiguous."""
        n = x.shape[1]
        xt = anp.transpose(x)
        out, o = [], 0
        for a, b in self.shapes:
            w = anp.reshape(xt[:, o:o + a * b], (n, a, b))
            o += a * b
            bias = anp.reshape(xt[:, o:o + b], (n, 1, b))
            o += b
            out.append((w, bias))
        return out

    def act(self, z):
        if self.activation == "tanh":
            return anp.tanh(z)
        if self.activation == "relu":
            return anp.maximum(z, 0.0)
        return anp.logaddexp(0.0, z)

    def forward(self, x, inputs):
        """Outputs (n, m, k) for parameters x (d, n) and inputs (m, p)."""
        h = inputs
        layers = self.layers(x)
        for i, (w, b) in enumerate(layers):
            h = anp.matmul(h, w) + b
            if i < len(layers) - 1:
                h = self.act(h)
        return h

    def blocks(self, x: np.ndarray) -> list:
        """``layers`` in plain numpy, for arrays autograd does not trace (no wrapper overhead)."""
        n = x.shape[1]
        xt = x.T
        out, o = [], 0
        for a, b in self.shapes:
            w = np.reshape(xt[:, o:o + a * b], (n, a, b))
            o += a * b
            out.append((w, np.reshape(xt[:, o:o + b], (n, 1, b))))
            o += b
        return out

    def act_derivatives(self, z, h):
        """First and second derivatives of the activation at z (h = act(z))."""
        if self.activation == "tanh":
            d1 = 1.0 - h * h
            return d1, -2.0 * h * d1
        if self.activation == "relu":
            # autograd's convention at a tie (z = 0): the derivative of max(z, 0) is ½
            return (z > 0) + 0.5 * (z == 0), np.zeros_like(z)
        s = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic sigmoid, without overflow
        return s, s * (1.0 - s)

    def hvp_at(self, x, inputs, head_curvature):
        """``v ↦ H v`` per column for the loss ℓ(net(x)) at parameters x (d, n), in plain numpy.

        Pearlmutter's R-operator: one forward and one backward pass at x are kept, then each
        product is a forward pass of the directional derivatives and a backward pass of their
        gradients (exact up to rounding; no autograd trace, whose per-operation overhead
        dominates at a few hundred parameters). ``head_curvature(out)`` returns the loss's
        gradient G (n, m, k) in the outputs and ``R ↦ ∇²ℓ·R`` (per sample, 1/m included).
        Every product is a stacked matmul per start, as in the forward pass (batch independent).
        """
        n = x.shape[1]
        layers = self.blocks(x)
        last = len(layers) - 1
        hs, d1s, d2s = [np.broadcast_to(inputs, (n,) + inputs.shape)], [], []
        for i, (w, b) in enumerate(layers):
            z = np.matmul(hs[-1], w) + b
            if i < last:
                h = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0),
                     "softplus": lambda a: np.logaddexp(0.0, a)}[self.activation](z)
                d1, d2 = self.act_derivatives(z, h)
                hs.append(h)
                d1s.append(d1)
                d2s.append(d2)
        g_out, curvature = head_curvature(z)
        # the backward pass at x: gradients in each layer's pre-activation (gz) and input (gh)
        wts = [np.swapaxes(w, 1, 2) for w, _ in layers]
        hts = [np.swapaxes(h, 1, 2) for h in hs]
        gzs = [None] * len(layers)
        cross = [None] * len(layers)  # d2(z) ⊙ gh: the activation's curvature term
        gz = g_out
        for i in range(last, -1, -1):
            gzs[i] = gz
            if i > 0:
                gh = np.matmul(gz, wts[i])
                gz = d1s[i - 1] * gh
                cross[i - 1] = d2s[i - 1] * gh

        def hvp(v):
            dirs = self.blocks(np.asarray(v, dtype=float))
            rzs, rhs = [], []
            for i, ((w, _), (a, c)) in enumerate(zip(layers, dirs)):
                rz = np.matmul(hs[i], a) + c
                if i > 0:
                    rz = rz + np.matmul(rhs[-1], w)
                rzs.append(rz)
                if i < last:
                    rhs.append(d1s[i] * rz)
            rgz = curvature(rzs[-1])
            out = []
            for i in range(last, -1, -1):
                rgw = np.matmul(hts[i], rgz)
                if i > 0:
                    rgw = rgw + np.matmul(np.swapaxes(rhs[i - 1], 1, 2), gzs[i])
                out.append(colsum(rgz, axis=1))
                out.append(rgw.reshape(n, -1))
                if i > 0:
                    rgh = (np.matmul(rgz, wts[i])
                           + np.matmul(gzs[i], np.swapaxes(dirs[i][0], 1, 2)))
                    rgz = d1s[i - 1] * rgh + cross[i - 1] * rzs[i - 1]
            return np.transpose(np.concatenate(out[::-1], axis=1))

        return hvp

    def init(self, rng: np.random.Generator, n_starts: int, hidden_gain: float = 1.0):
        """LeCun-normal weights (std = gain/√fan_in per layer), zero biases, one column per start."""
        blocks = []
        for a, b in self.shapes:
            blocks.append(rng.standard_normal((a * b, n_starts)) * (hidden_gain / math.sqrt(a)))
            blocks.append(np.zeros((b, n_starts)))
        return np.concatenate(blocks, axis=0)


def _per_sample(head: str, out, y):
    """Per-sample loss (n, m) from outputs (n, m, k) and targets y (m,), or (n, m) when each
    start has its own mini-batch."""
    if head == "mse":
        r = out[:, :, 0] - y
        return 0.5 * r * r
    if head == "mse_onehot":
        onehot = np.eye(out.shape[2])[y]
        r = out - onehot
        return 0.5 * anp.sum(r * r, axis=2)
    if head == "binary":  # log(1 + e^z) − y·z: the logistic loss of one logit
        z = out[:, :, 0]
        return anp.logaddexp(0.0, z) - y * z
    # softmax cross-entropy: logsumexp over the classes minus the true class's logit
    zmax = anp.max(out, axis=2, keepdims=True)
    lse = anp.log(anp.sum(anp.exp(out - zmax), axis=2)) + zmax[:, :, 0]
    rows = np.arange(out.shape[1])
    if np.ndim(y) == 1:
        return lse - out[:, rows, y]
    return lse - out[np.arange(out.shape[0])[:, None], rows, y]  # each start its own batch


def _head_curvature(head: str, y, m: int):
    """For outputs (n, m, k): the gradient of mean_m ℓ in the outputs and ``R ↦ ∇²·R``."""
    def at(out):
        k = out.shape[2]
        if head in ("mse", "mse_onehot"):
            target = y[:, None] if head == "mse" else np.eye(k)[y]
            return (out - target) / m, lambda r: r / m
        if head == "binary":
            p = 0.5 * (1.0 + np.tanh(0.5 * out))
            return (p - y[:, None]) / m, lambda r: (p * (1.0 - p)) * r / m
        e = np.exp(out - np.max(out, axis=2, keepdims=True))
        p = e / np.sum(e, axis=2, keepdims=True)
        return ((p - np.eye(k)[y]) / m,
                lambda r: p * (r - np.sum(p * r, axis=2, keepdims=True)) / m)
    return at


def _predict(head: str, out) -> np.ndarray:
    """Predicted class labels (n, m)."""
    if head == "binary":
        return (out[:, :, 0] > 0).astype(np.int64)
    return np.argmax(out, axis=2)


def _build(name: str, data: Dataset, net: _Net, head: str, l2: float, params: dict,
           minima=(), minima_complete=True, box: float = 3.0, start=None,
           constants: Optional[dict] = None, hidden_gain: float = 1.0) -> Objective:
    xtr, ytr, xte, yte = data.x_train, data.y_train, data.x_test, data.y_test

    def loss(x, inputs, y):
        single = x.ndim == 1
        xx = x[:, None] if single else x
        value = anp.mean(_per_sample(head, net.forward(xx, inputs), y), axis=1)
        if l2:
            value = value + (0.5 * l2) * colsum(xx * xx, axis=0)
        return value[0] if single else value

    def f(x, idx=None):
        """The loss on the training set, or on the mini-batch ``idx``: (b,) sample indices
        for every start, or (n, b), a row per start."""
        if idx is None:
            return loss(x, xtr, ytr)
        return loss(x, xtr[idx], ytr[idx])

    def evaluate(x):
        """Held-out loss and, for classification, train and test accuracy, per column."""
        x = np.asarray(x, dtype=float)
        xx = x[:, None] if x.ndim == 1 else x
        out = {}
        if xte.shape[0]:
            out["test_loss"] = np.asarray(loss(xx, xte, yte))
        if data.task == CLASSIFICATION:
            out["accuracy"] = np.mean(_predict(head, net.forward(xx, xtr)) == ytr, axis=1)
            if xte.shape[0]:
                out["test_accuracy"] = np.mean(_predict(head, net.forward(xx, xte)) == yte,
                                               axis=1)
        return out

    curvature = _head_curvature(head, ytr, xtr.shape[0])

    def hvp_at(x):
        """Exact Hessian-vector products of the full-batch f at x (d, n) (see _Net.hvp_at)."""
        x = np.asarray(x, dtype=float)
        net_hvp = net.hvp_at(x, xtr, curvature)
        if not l2:
            return net_hvp
        return lambda v: net_hvp(v) + l2 * np.asarray(v, dtype=float)

    d = net.dim
    lower, upper = np.full(d, -box), np.full(d, box)
    info = data.describe()
    return Objective(
        name=name, f=f, dim=d, domain=(_frozen(lower), _frozen(upper)),
        minima=tuple(Minimum(_frozen(m), float(f(_frozen(m))), True) for m in minima),
        plot_window=(_frozen(lower), _frozen(upper)), minima_complete=minima_complete,
        params={**params, "data": info["name"]}, n_samples=data.n_samples,
        start=None if start is None else _frozen(start),
        init_model=lambda rng, n_starts: net.init(rng, n_starts, hidden_gain),
        evaluate=evaluate, dataset=info, constants=dict(constants or {}), hvp_at=hvp_at)


def _l2(value, minimum_exclusive=False) -> float:
    if minimum_exclusive:
        return _real_arg("l2", value, lambda v: v > 0, "a number > 0")
    return _real_arg("l2", value, lambda v: v >= 0, "a number >= 0")


def _design(x: np.ndarray) -> np.ndarray:
    """[x, 1]: the inputs with a column of ones for the bias (rows are samples)."""
    return np.hstack([x, np.ones((x.shape[0], 1))])


def least_squares(data: Optional[Dataset] = None, l2: float = 0.0) -> Objective:
    """Linear regression: ½·mean((x_i·w + b − y_i)²) + ½·l2·‖(w, b)‖² over the training set.

    Parameters (w, b): dim = p + 1. The minimiser is exact at build time (lstsq on the design
    [X, 1], stacked with √(m·l2)·I when l2 > 0) and listed as the global minimum; the Hessian
    H = [X, 1]ᵀ[X, 1]/m + l2·I is constant, so L = λmax(H) and μ = λmin(H) are exact
    (``constants``). Default data: ``linear``.
    """
    data = dataset_or_default(data, "linear")
    if data.task != REGRESSION:
        raise ValueError(f"loss mse needs a regression data set, got {data.name!r} "
                         f"({data.task})")
    l2 = _l2(l2)
    a = _design(data.x_train)
    m, d = a.shape
    hessian = a.T @ a / m + l2 * np.eye(d)
    eig = np.linalg.eigvalsh(hessian)
    if l2:
        a_aug = np.vstack([a, math.sqrt(m * l2) * np.eye(d)])
        y_aug = np.concatenate([data.y_train, np.zeros(d)])
    else:
        a_aug, y_aug = a, data.y_train
    w = np.linalg.lstsq(a_aug, y_aug, rcond=None)[0]
    net = _Net([data.n_features, 1], "tanh")
    complete = bool(eig[0] > 1e-12 * eig[-1])  # a singular Hessian: a line of minima
    return _build("least_squares", data, net, "mse", l2, {"l2": l2}, minima=[w],
                  minima_complete=complete, box=max(3.0, 2 * float(np.max(np.abs(w)))),
                  start=np.zeros(d), constants={"L": float(eig[-1]), "mu": float(eig[0])})


def _logistic_newton(a: np.ndarray, y: np.ndarray, k: int, l2: float) -> np.ndarray:
    """Minimiser of the ℓ2-regularised logistic loss by damped Newton, to machine precision.

    Closed-form gradient and Hessian (binary: one logit, sigmoid; k > 2: softmax). Strictly
    convex for l2 > 0, so Newton with backtracking converges from 0; it stops when the
    gradient stops shrinking (rounding level).
    """
    m, p = a.shape
    kk = 1 if k == 2 else k
    onehot = np.eye(k)[y] if kk > 1 else y[:, None].astype(float)

    def parts(w):
        wm = w.reshape(p, kk)
        z = a @ wm
        if kk == 1:
            value = np.mean(np.logaddexp(0, z[:, 0]) - y * z[:, 0])
            s = 0.5 * (1 + np.tanh(0.5 * z))  # a sigmoid that cannot overflow
            r = s - onehot
        else:
            zmax = z.max(axis=1, keepdims=True)
            e = np.exp(z - zmax)
            s = e / e.sum(axis=1, keepdims=True)
            value = np.mean(np.log(e.sum(axis=1)) + zmax[:, 0] - z[np.arange(m), y])
            r = s - onehot
        g = (a.T @ r / m).ravel() + l2 * w
        return value + 0.5 * l2 * w @ w, g, s

    def hessian(w, s):
        if kk == 1:
            h = (a.T * (s[:, 0] * (1 - s[:, 0]))) @ a / m
        else:
            # Σ_i (diag(s_i) − s_i s_iᵀ) ⊗ a_i a_iᵀ, indices ordered as w.reshape(p, k)
            cov = np.einsum("ik,kl->ikl", s, np.eye(kk)) - np.einsum("ik,il->ikl", s, s)
            h = np.einsum("ip,ikl,iq->pkql", a, cov, a).reshape(p * kk, p * kk) / m
        return h + l2 * np.eye(p * kk)

    w = np.zeros(p * kk)
    value, g, s = parts(w)
    best, best_norm, stalled = w, np.linalg.norm(g), 0
    for _ in range(100):
        step = np.linalg.solve(hessian(w, s), g)
        t = 1.0
        while True:
            w_new = w - t * step
            v_new, g_new, s_new = parts(w_new)
            if v_new <= value - 1e-4 * t * (g @ step) or t < 1e-10:
                break
            t *= 0.5
        w, value, g, s = w_new, v_new, g_new, s_new
        gn = np.linalg.norm(g)
        if gn < best_norm:
            best, best_norm, stalled = w, gn, 0
        else:
            stalled += 1
        if gn == 0 or stalled >= 3:
            break
    return best


def logistic(data: Optional[Dataset] = None, l2: float = 1e-2) -> Objective:
    """(Multinomial) logistic regression: mean cross-entropy + ½·l2·‖(W, b)‖².

    Two classes: one logit z = x·w + b, loss log(1 + e^z) − y·z (dim p + 1); k > 2 classes:
    softmax over k logits (dim (p + 1)·k). l2 > 0 makes the loss strictly convex, so the
    minimum is unique; it is computed at build time by damped Newton with closed-form
    derivatives, to machine precision, and listed. With two classes the smoothness
    constant is exact: the Hessian Aᵀdiag(s(1−s))A/m + l2·I is largest at s = ½ (x = 0), so
    L = λmax(AᵀA)/(4m) + l2, and μ = l2 is the infimum of λmin (``constants``).
    Default data: ``moons``.
    """
    data = dataset_or_default(data, "moons")
    if data.task != CLASSIFICATION:
        raise ValueError(f"loss cross_entropy needs a classification data set, got "
                         f"{data.name!r} ({data.task})")
    l2 = _l2(l2, minimum_exclusive=True)
    k = data.n_classes
    head = "binary" if k == 2 else "softmax"
    net = _Net([data.n_features, 1 if k == 2 else k], "tanh")
    w = _logistic_newton(_design(data.x_train), data.y_train, k, l2)
    # Newton's order is (p+1, k) over [X, 1]; the network's is W (p, k) then b (k)
    kk = 1 if k == 2 else k
    wm = w.reshape(data.n_features + 1, kk)
    x_star = np.concatenate([wm[:-1].ravel(), wm[-1]])
    constants = {}
    if k == 2:
        a = _design(data.x_train)
        constants = {"L": float(np.linalg.eigvalsh(a.T @ a)[-1] / (4 * a.shape[0]) + l2),
                     "mu": l2}
    return _build("logistic", data, net, head, l2, {"l2": l2}, minima=[x_star],
                  box=max(3.0, 2 * float(np.max(np.abs(x_star)))), start=np.zeros(net.dim),
                  constants=constants)


def mlp(data: Optional[Dataset] = None, hidden: Sequence[int] = (20, 20),
        activation: str = "tanh", loss: Optional[str] = None, l2: float = 0.0,
        init_gain: float = 1.0) -> Objective:
    """A fully connected network: inputs → ``hidden`` layers (``activation``) → outputs.

    ``loss`` mse (regression: one output; classification: one-hot targets, k outputs) or
    cross_entropy (classification: one logit for two classes, softmax over k otherwise);
    default mse for regression sets, cross_entropy for classification. Parameters are every
    layer's W (in, out) then b (out), flattened. Non-convex: no minimum is known, so
    ``minima`` is empty and ``minima_complete`` False. ``init=model`` draws LeCun-normal
    weights (std = init_gain/√fan_in), zero biases. Default data: ``chebyshev``.
    """
    data = dataset_or_default(data, "chebyshev")
    hidden = list(hidden) if not isinstance(hidden, (str, bytes)) else hidden
    if not isinstance(hidden, list) or not all(
            isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h > 0
            for h in hidden):
        raise ValueError(f"hidden must be a list of integers > 0, got {hidden}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                         f"got {activation!r}")
    if loss is None:
        loss = "mse" if data.task == REGRESSION else "cross_entropy"
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss == "cross_entropy" and data.task != CLASSIFICATION:
        raise ValueError(f"loss cross_entropy needs a classification data set, got "
                         f"{data.name!r} ({data.task})")
    l2 = _l2(l2)
    init_gain = _real_arg("init_gain", init_gain, lambda v: v > 0, "a number > 0")
    k = data.n_classes
    if data.task == REGRESSION:
        head, out = "mse", 1
    elif loss == "mse":
        head, out = "mse_onehot", k
    else:
        head, out = ("binary", 1) if k == 2 else ("softmax", k)
    net = _Net([data.n_features, *hidden, out], activation)
    start = net.init(np.random.default_rng(0), 1, init_gain)[:, 0]
    return _build("mlp", data, net, head, l2,
                  {"hidden": [int(h) for h in hidden], "activation": activation, "loss": loss,
                   "l2": l2, "init_gain": init_gain},
                  minima=(), minima_complete=False, box=3.0, start=start,
                  hidden_gain=init_gain)


LEARNING = {"least_squares": least_squares, "logistic": logistic, "mlp": mlp}
