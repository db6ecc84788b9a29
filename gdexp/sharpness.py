"""Sharpness along the path: λmax of the full-batch Hessian by batched, warm-started Lanczos on Hessian-vector products."""
from __future__ import annotations

import math
from typing import Callable, Optional

import autograd.numpy as anp
import numpy as np
from autograd import grad, make_vjp

from .objectives import Objective, colsum
from .optimizers import Stability

# Lanczos stops for a start once its top Ritz pair (θ, u) has ‖H u − θ u‖ ≤ tol·|θ| ...
DEFAULT_TOL = 1e-6
# ... or after this many Hessian-vector products (then the value is the best Ritz value found).
MAX_ITER = 60


def hvp_at(objective: Objective, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``v ↦ H v`` per column at the columns of x (d, n), never forming H.

    With S(X) = Σ_j f(x_j), the gradient of S has column j equal to ∇f(x_j), and its vector-
    Jacobian product with V has column j equal to H_j v_j (H symmetric): columns do not mix.
    The gradient's graph is traced once and each product is one reverse pass through it. An
    objective with its own exact products (``objective.hvp_at``) uses those instead.
    """
    if objective.hvp_at is not None:
        return objective.hvp_at(x)
    grad_sum = grad(lambda z: anp.sum(objective.f(z)))
    vjp, _ = make_vjp(grad_sum)(x)
    return vjp


def _colnorm(v):
    return np.sqrt(colsum(v * v))


def start_vector(d: int, n: int) -> np.ndarray:
    """The same fixed pseudo-random unit vector for every column (so a column alone and in a
    batch start alike); generic, i.e. not orthogonal to any eigenvector in practice."""
    r = np.random.default_rng(20200101).standard_normal(d)
    r /= math.sqrt(float(np.cumsum(r * r)[-1]))
    return np.repeat(r[:, None], n, axis=1)


def lanczos_top(hvp: Callable, v0: np.ndarray, tol: float = DEFAULT_TOL,
                max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest eigenvalue and its eigenvector per column, by Lanczos with full reorthogonalisation.

    ``hvp`` maps (d, n) → (d, n) column by column; ``v0`` (d, n) are the start vectors (e.g.
    the previous top eigenvectors). Each column stops (its values are frozen, so they do not
    depend on the other columns) at the first iteration where the residual of its top Ritz
    pair ‖H u − θ u‖ = |β_j·s_j| is ≤ tol·|θ|, where the Krylov space is exhausted (β = 0), or
    at ``max_iter``. Returns θ (n,), u (d, n) and the products used per column (n,).
    By the Kato–Temple bound |θ − λ| ≤ (tol·θ)²/gap, and θ ≤ λmax always (Rayleigh–Ritz).
    """
    d, n = v0.shape
    m = max(1, min(int(max_iter), d))
    q = np.array(v0, dtype=float)
    bad = ~np.all(np.isfinite(q), axis=0) | (_colnorm(q) == 0)
    if bad.any():
        q[:, bad] = start_vector(d, int(bad.sum()))
    # The Lanczos vectors in one array (j, n, d), each start's vector a contiguous row. A dot
    # product over d is then numpy's sum over an innermost contiguous axis, which rounds every
    # row alike however many rows there are (pairwise within the row, never across starts);
    # a sum over the basis index j (not innermost) runs sequentially in index order. So a
    # column's numbers do not depend on n, at a fraction of colsum's cost (a cumulative sum).
    basis = np.empty((m + 1, n, d))
    basis[0] = (q / _colnorm(q)).T
    t = np.zeros((n, m, m))  # the tridiagonal matrices, filled in place
    theta = np.full(n, np.nan)
    u = basis[0].copy()
    used = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    tiny = np.finfo(float).tiny
    with np.errstate(all="ignore"):
        for j in range(m):
            k = j + 1
            # rows contiguous (C order), so that the sums below are the row-wise ones
            w = np.ascontiguousarray(np.asarray(hvp(np.ascontiguousarray(basis[j].T)),
                                                dtype=float).T)
            qs = basis[:k]
            for rep in range(2):  # full reorthogonalisation, twice ("twice is enough")
                c = np.sum(qs * w[None], axis=2, keepdims=True)  # (k, n, 1)
                if rep == 0:
                    t[:, j, j] = c[j, :, 0]  # α_j = q_jᵀ H q_j
                w = w - np.sum(c * qs, axis=0)  # over the basis index: sequential in index order
            b = np.sqrt(np.sum(w * w, axis=1))
            tk = t[:, :k, :k]
            finite = np.isfinite(b) & np.isfinite(tk).all(axis=(1, 2))
            if finite.all():
                ev, vecs = np.linalg.eigh(tk)
                th, s = ev[:, -1], vecs[:, :, -1]
            else:
                th, s = np.full(n, np.nan), np.full((n, k), np.nan)
                if finite.any():
                    ev, vecs = np.linalg.eigh(tk[finite])
                    th[finite], s[finite] = ev[:, -1], vecs[:, :, -1]
            scale = np.maximum(np.abs(th), tiny)
            stop = ~done & (~finite | (np.abs(b * s[:, -1]) <= tol * scale)
                            | (b <= 1e-14 * scale) | (k == m))
            if stop.any():
                vec = s[:, :1] * qs[0]
                for i in range(1, k):
                    vec = vec + s[:, i:i + 1] * qs[i]
                theta[stop] = th[stop]
                u[stop] = vec[stop]
                used[stop] = k
                done |= stop
                if done.all():
                    break
            basis[k] = w / np.where(b > 0, b, 1.0)[:, None]
            if k < m:
                t[:, j, k] = t[:, k, j] = b
    u = np.ascontiguousarray(u.T)
    return theta, u, used


class SharpnessMonitor:
    """A descent callback: every ``every`` steps, λmax(∇²f(x_k)) of every start, warm-started.

    Records, for the steps k = 0, every, 2·every, … (and only for starts still descending, or
    stopping at that very step; NaN otherwise), ``sharpness`` (m, n) and the Hessian-vector
    products used. ``objective.f`` is the full-batch loss, whatever the steps use.
    """

    def __init__(self, objective: Objective, every: int, tol: float = DEFAULT_TOL,
                 max_iter: int = MAX_ITER):
        self.objective, self.every, self.tol, self.max_iter = objective, int(every), tol, max_iter
        self.steps: list[int] = []
        self.values: list[np.ndarray] = []
        self.products: list[np.ndarray] = []
        self._u: Optional[np.ndarray] = None
        self._was_active: Optional[np.ndarray] = None

    def __call__(self, k, x, f, grad_norm, active):
        keep = self.due(k, active)
        if keep is not None:
            self.record(k, keep, *top_eigen(self.objective, x, self.start_vectors(*x.shape),
                                            self.tol, self.max_iter))

    def due(self, k, active) -> Optional[np.ndarray]:
        """At step k (called once per step): the starts this step's record keeps (those
        still descending or stopping at k), or None when it records nothing."""
        was = self._was_active if self._was_active is not None else np.ones(active.shape, bool)
        self._was_active = np.array(active, dtype=bool)
        if k % self.every:
            return None
        keep = active | was
        return keep if keep.any() else None

    def start_vectors(self, d: int, n: int) -> np.ndarray:
        """Lanczos's start vectors: the last top eigenvectors (a fixed vector at first)."""
        if self._u is None:
            self._u = start_vector(d, n)
        return self._u

    def record(self, k, keep, theta, u, used) -> None:
        ok = np.all(np.isfinite(u), axis=0)
        self._u = np.where(ok, u, self._u)
        self.steps.append(int(k))
        self.values.append(np.where(keep, theta, np.nan))
        self.products.append(np.where(keep, used, 0))

    def arrays(self, lr_at: Callable[[np.ndarray], np.ndarray],
               stability: Stability) -> dict[str, np.ndarray]:
        """``sharpness_steps`` (m,), ``sharpness``, ``stability_threshold``, ``sharpness_ratio``
        (m, n) and ``sharpness_products`` (m, n). ``lr_at(steps)`` (m, n) gives each start's
        rate at those steps (the threshold moves with a schedule); the threshold is NaN for
        an optimizer without one."""
        steps = np.asarray(self.steps, dtype=np.int64)
        n = self._was_active.size if self._was_active is not None else 0
        lam = np.array(self.values).reshape(len(steps), n)
        thr = stability.threshold(lr_at(steps)) if len(steps) else None
        thr = np.full(lam.shape, np.nan) if thr is None else np.broadcast_to(thr, lam.shape)
        with np.errstate(all="ignore"):
            ratio = lam / thr
        return {"sharpness_steps": steps, "sharpness": lam,
                "stability_threshold": np.array(thr, dtype=float), "sharpness_ratio": ratio,
                "sharpness_products": np.array(self.products).reshape(len(steps), n)}


def top_eigen(objective: Objective, x: np.ndarray, v0: np.ndarray, tol: float = DEFAULT_TOL,
              max_iter: int = MAX_ITER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``lanczos_top`` on the Hessians at the columns of x, from the start vectors v0."""
    with np.errstate(all="ignore"):
        return lanczos_top(hvp_at(objective, x), v0, tol, max_iter)


def together(monitors, sizes) -> Callable:
    """One descent callback for the monitors of jobs descended side by side (consecutive
    blocks of ``sizes`` columns; None: a job without one, all others alike in tolerance).
    At a step where some are due, one Lanczos over the columns of those jobs; each job's
    monitor records its own block, as alone (a column's Lanczos does not depend on others)."""
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    own = [(m, slice(bounds[j], bounds[j + 1])) for j, m in enumerate(monitors) if m is not None]
    first = own[0][0]

    def call(k, x, f, grad_norm, active):
        due = [(m, cols, keep) for m, cols in own
               if (keep := m.due(k, active[cols])) is not None]
        if not due:
            return
        d = x.shape[0]
        if len(due) == len(monitors):
            xs = x
        else:
            xs = np.concatenate([x[:, cols] for _, cols, _ in due], axis=1)
        v0 = np.concatenate([m.start_vectors(d, cols.stop - cols.start) for m, cols, _ in due],
                            axis=1)
        theta, u, used = top_eigen(first.objective, xs, v0, first.tol, first.max_iter)
        at = 0
        for m, cols, keep in due:
            mine = slice(at, at + cols.stop - cols.start)
            m.record(k, keep, theta[mine], u[:, mine], used[mine])
            at = mine.stop

    return call


def chain(*callbacks) -> Callable:
    """One descent callback calling each of ``callbacks`` (None entries skipped) in order."""
    cbs = [c for c in callbacks if c is not None]

    def call(k, x, f, grad_norm, active):
        for c in cbs:
            c(k, x, f, grad_norm, active)

    return call
