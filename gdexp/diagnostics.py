"""Diagnostics that set a finished run against theory: curvature, Taylor ratio, contraction, basins, targets."""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import numpy as np

from .descent import Result, Trace
from .objectives import Objective
from .optimizers import Stability, gd
from .sharpness import hvp_at

# Targets of the fixed-target analysis: f − f* ≤ 10^k for each k.
DEFAULT_TARGET_EXPONENTS = (1, 0, -1, -2, -4, -6, -8)
# A Hessian eigenvalue counts as zero when |λ| ≤ REL_TOL × the largest |λ| seen at the start
# or the end of that start's descent (see `point_tolerance`).
REL_TOL = 1e-6
# Hessians are computed for at most this many starts (evenly spaced over the batch) ...
MAX_HESSIAN_STARTS = 1000
# ... and for at most this many Hessian entries in all (d² per start), to bound memory.
HESSIAN_BUDGET = 2_000_000
# At most this many atlas.<label> metrics per run (the full table is in the returned parts).
MAX_ATLAS_METRICS = 20
POINT_CLASSES = ("minimum", "maximum", "saddle", "degenerate", "non-finite")

_EPS = np.finfo(float).eps


# ----------------------------------------------------------------------------- curvature

def hessian_columns(n: int, dim: int, max_starts: int = MAX_HESSIAN_STARTS) -> np.ndarray:
    """Which starts get a Hessian: all of them, or an evenly spaced subset of the batch.

    Evenly spaced rather than the first ones because a learning-rate axis tiles the starts
    (all starts at the first rate come first); the subset then still covers every rate.
    """
    k = max(1, min(n, int(max_starts), HESSIAN_BUDGET // max(dim * dim, 1)))
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def hessians(objective: Objective, x: np.ndarray) -> np.ndarray:
    """Hessians (k, d, d) of f at the columns of x (d, k), in d batched Hessian-vector products.

    The columns do not interact, so with S(X) = Σ_j f(x_j) the gradient of ⟨∇S(X), V⟩ with
    respect to X has column j equal to H_j v_j. Taking every v_j = e_i gives column i of every
    H_j at once: the cost is d batched products, whatever k is (instead of k separate
    `autograd.hessian` calls of ≈0.7 ms each in 2-D): the objective's own exact products
    where it has them (``Objective.hvp_at``), else reverse-over-reverse passes through the
    gradient's graph, traced once and reused by the d products.
    """
    x = np.asarray(x, dtype=float)
    d, k = x.shape
    out = np.empty((k, d, d))
    with np.errstate(all="ignore"):
        hvp = hvp_at(objective, x)  # set up once at x, then one batched product per column
        for i in range(d):
            v = np.zeros((d, k))
            v[i] = 1.0
            out[:, :, i] = np.asarray(hvp(v)).T
    return 0.5 * (out + np.swapaxes(out, 1, 2))  # symmetric up to rounding; make it exact


def eigenvalues(h: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues (k, d) of symmetric matrices (k, d, d); NaN rows where H is not finite."""
    k, d, _ = h.shape
    out = np.full((k, d), np.nan)
    ok = np.isfinite(h).all(axis=(1, 2))
    if ok.any():
        out[ok] = np.linalg.eigvalsh(h[ok])
    return out


def point_tolerance(eig_final: np.ndarray, eig_x0: Optional[np.ndarray] = None,
                    rel_tol: float = REL_TOL) -> np.ndarray:
    """Per start, the |λ| below which a Hessian eigenvalue counts as zero.

    tol = rel_tol · max(‖H(x_final)‖₂, ‖H(x0)‖₂). Relative, so that rescaling f does not change
    a class; measured against the curvature at the start too, so that a point where every
    eigenvalue has become tiny compared with the problem's own scale is called degenerate
    rather than a minimum. With the default 1e-6 rounding errors (≈1e-16·‖H‖) are far below
    tol, and a Hessian with condition number ≥ 1e6 counts as degenerate.
    Limit: the class is that of the final point itself. GD stopping short of a degenerate
    stationary point (x⁴ stopped at x = 0.03: curvature 0.01 against 12 at x = 1) still sees
    positive curvature there, and such a point is called a minimum.
    """
    scale = np.nanmax(np.abs(eig_final), axis=1, initial=0.0) if eig_final.size else np.zeros(0)
    if eig_x0 is not None:
        with np.errstate(invalid="ignore"):
            s0 = np.nanmax(np.where(np.isfinite(eig_x0), np.abs(eig_x0), 0.0), axis=1, initial=0.0)
        scale = np.maximum(scale, s0)
    return rel_tol * scale


def classify_points(eigs: np.ndarray, tol) -> np.ndarray:
    """Per row of eigenvalues (k, d): "minimum" / "maximum" / "saddle" / "degenerate" / "non-finite".

    Eigenvalues of both signs beyond ±tol make a saddle even when another one is ~0 (the
    point is then certainly not an extremum); otherwise any |λ| ≤ tol makes it degenerate
    (second order cannot decide); else all > tol is a minimum and all < −tol a maximum.
    ``tol`` is a scalar or one value per row (see `point_tolerance`).
    """
    lam = np.atleast_2d(np.asarray(eigs, dtype=float))
    tol = np.broadcast_to(np.asarray(tol, dtype=float), lam.shape[:1])[:, None]
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(lam).all(axis=1) & (lam.shape[1] > 0)
        pos, neg = (lam > tol).any(axis=1), (lam < -tol).any(axis=1)
        flat = (np.abs(lam) <= tol).any(axis=1)
    out = np.where(pos & neg, "saddle",
                   np.where(flat, "degenerate", np.where(pos, "minimum", "maximum")))
    return np.where(finite, out, "non-finite").astype(object)


def classify_point(eigs, tol: float) -> str:
    """The class of one point from its Hessian eigenvalues (d,); see `classify_points`."""
    return str(classify_points(np.asarray(eigs, dtype=float)[None, :], tol)[0])


def row_median(a: np.ndarray) -> np.ndarray:
    """Median of each row over its non-NaN entries (NaN for an all-NaN row), fully vectorised
    (np.nanmedian along axis 1 loops in Python over the rows)."""
    srt = np.sort(a, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(a), axis=1)
    lo = np.maximum((count - 1) // 2, 0)[:, None]
    hi = np.maximum(count // 2, 0)[:, None]
    med = 0.5 * (np.take_along_axis(srt, lo, 1) + np.take_along_axis(srt, hi, 1))[:, 0]
    return np.where(count > 0, med, np.nan)


def smoothness(objective: Objective, result: Result, *, max_starts: int = MAX_HESSIAN_STARTS,
               rel_tol: float = REL_TOL, stability: Optional[Stability] = None) -> dict:
    """Curvature at the start and at the end of each (sampled) start, and the final point's class.

    L = λmax(∇²f), the largest Hessian eigenvalue. Along that direction the optimizer's update
    is locally its 1-D quadratic recursion, stable iff lr·(L + wd) < ``stability.limit`` (2
    for GD, so lr < 2/L; see ``optimizers.Stability``; default: GD's). Returns per analysed
    start (arrays over ``starts``): ``L_x0``, ``L_final``, ``lambda_min_x0``,
    ``lambda_min_final``, ``stable_lr_x0`` / ``stable_lr_final`` = the largest stable rate at
    that curvature (inf when L + wd ≤ 0, NaN when the rule has no fixed threshold),
    ``lr_L_x0``, ``lr_L_final`` (with the start's base rate), ``stability_threshold`` (the
    largest stable curvature at the start's rate, NaN when none), ``tol``, ``point_class``
    (tuple of str) and ``eigenvalues_final`` (k, d).
    Cost: 2·d batched Hessian-vector products over at most ``max_starts`` starts.
    """
    stability = stability or gd().stability
    cols = hessian_columns(result.n, result.x.shape[0], max_starts)
    e0 = eigenvalues(hessians(objective, result.x0[:, cols]))
    e1 = eigenvalues(hessians(objective, result.x[:, cols]))
    tol = point_tolerance(e1, e0, rel_tol)
    lr = result.lr[cols]
    threshold = stability.threshold(lr)
    out = {"starts": cols,
           "stability_threshold": np.full(lr.shape, np.nan) if threshold is None else threshold}
    for tag, e in (("x0", e0), ("final", e1)):
        lmax, lmin = e[:, -1], e[:, 0]
        stable = stability.stable_lr(lmax)
        stable = np.full(lmax.shape, np.nan) if stable is None else \
            np.where(np.isfinite(lmax), stable, np.nan)
        out.update({f"L_{tag}": lmax, f"lambda_min_{tag}": lmin, f"stable_lr_{tag}": stable,
                    f"lr_L_{tag}": lr * lmax})
    out["tol"] = tol
    out["point_class"] = tuple(str(c) for c in classify_points(e1, tol))
    out["eigenvalues_final"] = e1
    return out


# ----------------------------------------------------------------------------- Taylor ratio

def taylor_ratio(trace: Trace, steps_taken: np.ndarray) -> dict:
    """Actual over predicted first-order change of f, per step and start: Δf_k / (−lr_k‖∇f_k‖²).

    The prediction is the one of a gradient step x − lr·g (exact first order for plain GD,
    with or without a line search, since the trace records the rate actually used). The trace
    keeps no gradient vectors, so for other optimizers it stays the GD step's prediction: the
    ratio then compares the actual change with what a GD step of the same rate would promise.
    On a quadratic ½(x−c)ᵀA(x−c) a GD step gives exactly 1 − lr·gᵀAg / (2‖g‖²).

    Only pairs of consecutive recorded steps (k, k+1) are used, and only steps the start
    actually took (k < steps_taken). A ratio is undefined (NaN, ``defined`` False) where a
    value is not finite, where g = 0, or where the predicted change lr‖g‖² is below
    64·eps·|f| (f's own rounding would swamp Δf). Returns ``steps`` (m',), ``ratio`` and
    ``defined`` (m', n), ``full_resolution`` (every step recorded) and ``prediction``.
    """
    steps = trace.steps
    pair = np.flatnonzero(np.diff(steps) == 1) if steps.size > 1 else np.zeros(0, int)
    if trace.batch_loss is not None:  # SGD steps along a batch gradient: no such prediction
        pair = pair[:0]
    k = steps[pair]
    f0, f1 = trace.loss[pair], trace.loss[pair + 1]
    pred = trace.lr[pair] * trace.grad_norm[pair] ** 2
    with np.errstate(all="ignore"):
        floor = 64 * _EPS * np.maximum(np.abs(f0), np.abs(f1))
        defined = (np.isfinite(f0) & np.isfinite(f1) & np.isfinite(pred) & (pred > 0)
                   & (pred > floor) & (k[:, None] < np.asarray(steps_taken)[None, :]))
        ratio = np.where(defined, (f1 - f0) / np.where(defined, -pred, 1.0), np.nan)
    full = bool(steps.size < 2 or np.all(np.diff(steps) == 1))
    return {"steps": k, "ratio": ratio, "defined": defined, "full_resolution": full,
            "prediction": "-lr*|g|^2 (gradient step)"}


def quadratic_taylor_ratio(a: np.ndarray, g: np.ndarray, lr) -> np.ndarray:
    """Closed form of the Taylor ratio of a GD step on ½(x−c)ᵀA(x−c): 1 − lr·gᵀAg / (2‖g‖²).

    From f(y − lr·g) − f(y) = −lr·gᵀAy + ½lr²·gᵀAg with Ay = g. ``g`` is (d,) or (d, n).
    """
    g = np.asarray(g, dtype=float)
    return 1.0 - lr * np.sum(g * (a @ g), axis=0) / (2.0 * np.sum(g * g, axis=0))


# ----------------------------------------------------------------------------- contraction

def quadratic_contraction(objective: Objective, result: Result) -> Optional[dict]:
    """Predicted and observed per-step contraction of the error x − c on a quadratic (else None).

    Predicted (GD theory): the error evolves by I − lr·A, so each step multiplies it by at most
    ρ = max_i |1 − lr·λ_i|. With a varying rate the geometric mean of the recorded steps'
    factors is returned (with a constant rate it is exactly ρ).
    Observed: e_k = ‖x_k − c‖ along the recorded path, over the steps the start took, as long
    as e_k is finite and above √eps·(‖c‖ + e_0) (closer to c, x − c is mostly rounding). Over the
    second half of those steps, ρ_obs = (e_K / e_J)^(1/(K − J)): late steps, where the slowest
    mode dominates as the theory assumes, and a geometric mean over many steps, so that
    oscillating modes and a thinned path do not bias it. NaN when fewer than two usable points.
    """
    params = objective.params or {}
    if objective.name != "quadratic" or "eigenvalues" not in params:
        return None
    lam = np.asarray(params["eigenvalues"], dtype=float)
    c = np.asarray(params.get("center", np.zeros(lam.size)), dtype=float)
    t = result.trace
    taken = np.asarray(result.steps)
    lo, hi = lam.min(), lam.max()
    with np.errstate(all="ignore"):
        # |1 − lr·λ| is convex in λ, so its maximum over the spectrum sits at λmin or λmax.
        predicted = np.maximum(np.abs(1.0 - result.lr * lo), np.abs(1.0 - result.lr * hi))
        if t.lr.size and not np.all(t.lr == t.lr[:1]):  # a schedule or a line search
            factors = np.maximum(np.abs(1.0 - t.lr * lo), np.abs(1.0 - t.lr * hi))  # (m, n)
            used = (t.steps[:, None] < taken[None, :]) & (factors > 0)
            logs = np.where(used, np.log(np.where(used, factors, 1.0)), 0.0)
            count = used.sum(axis=0)
            predicted = np.where(count > 0, np.exp(logs.sum(axis=0) / np.maximum(count, 1)),
                                 predicted)

        ps = t.path_steps
        err = np.sqrt(np.sum((t.path - c[None, :, None]) ** 2, axis=1))  # (p, n)
        floor = math.sqrt(_EPS) * (np.linalg.norm(c) + err[0])
        usable = (ps[:, None] <= taken[None, :]) & np.isfinite(err) & (err > floor)
        usable = np.logical_and.accumulate(usable, axis=0)  # the usable prefix of each path
        end = usable.sum(axis=0)
        last = np.maximum(end - 1, 1)
        half = 0.5 * (ps[0] + ps[np.minimum(last, ps.size - 1)])
        first = np.minimum(np.searchsorted(ps, half), last - 1)
        cols = np.arange(err.shape[1])
        ok = end >= 2
        last, first = np.where(ok, last, 1), np.where(ok, first, 0)
        if ps.size >= 2:
            ratio = err[last, cols] / err[first, cols]
            span = (ps[last] - ps[first]).astype(float)
            observed = np.where(ok, ratio ** (1.0 / span), np.nan)
        else:
            observed = np.full(err.shape[1], np.nan)
    return {"rho_predicted": predicted, "rho_observed": observed, "eigenvalues": lam,
            "valid_for": "gd"}


# ----------------------------------------------------------------------------- atlas

def atlas_labels(result: Result) -> tuple[str, ...]:
    """Per start: "min i (global)" / "min i" when it ended in a listed minimum's basin
    (``result.basin``; i = ``result.nearest``, whatever its status), else "diverged",
    "max_steps", or "other stationary point" (converged away from every listed minimum)."""
    labels = []
    for j in range(result.n):
        basin, outcome = result.basin[j], result.status[j].outcome
        if basin in ("global", "local"):
            i = int(result.nearest[j])
            labels.append(f"min {i} (global)" if basin == "global" else f"min {i}")
        elif outcome == "diverged":
            labels.append("diverged")
        elif outcome == "max_steps":
            labels.append("max_steps")
        else:
            labels.append("other stationary point")
    return tuple(labels)


def _label_order(label: str):
    if label.startswith("min "):
        return (0, int(label.split()[1]), label)
    rest = ("other stationary point", "max_steps", "diverged")
    return (1, rest.index(label) if label in rest else len(rest), label)


def atlas(result: Result) -> dict:
    """``labels`` per start and ``fractions``: label → fraction of starts (minima first, by index)."""
    labels = atlas_labels(result)
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    fractions = {lab: counts[lab] / len(labels) for lab in sorted(counts, key=_label_order)}
    return {"labels": labels, "fractions": fractions}


def label_key(label: str) -> str:
    """An atlas label as a metric-name part: "min 0 (global)" → "min_0_global"."""
    return "_".join(label.replace("(", " ").replace(")", " ").split())


# ----------------------------------------------------------------------------- fixed target

def target_label(exponent: float) -> str:
    """10^k as a short name: 1e1, 1e0, 1e-2, 1e-0.5."""
    return f"1e{exponent:g}"


def fixed_target(trace: Trace, steps_taken: np.ndarray, f_star: float,
                 exponents: Sequence[float] = DEFAULT_TARGET_EXPONENTS) -> dict:
    """First step at which f − f* ≤ 10^k, per target and start; aRT and the runtime ECDF.

    ``hit_steps`` (T, n): the first recorded step k ≤ steps_taken with f_k − f* ≤ target, NaN
    when never. When the trace is thinned a hit is known only to the recorded steps: the step
    reported is the first recorded one, at most ``resolution`` − 1 steps late (``resolution``
    = the largest gap between recorded steps; 1 at full resolution).
    ``table``: per target, a dict (target, exponent, successes, n, aRT) with aRT = Σ_j spent_j /
    successes, spent_j = the hit step if start j reached the target, else all its steps
    (inf when no start did). ``ecdf_steps`` / ``ecdf_fraction``: the sorted hit steps of all
    (start, target) pairs and the fraction of the n·T pairs reached by then.
    """
    steps = trace.steps
    taken = np.asarray(steps_taken)
    n = trace.loss.shape[1]
    with np.errstate(invalid="ignore"):
        gap = trace.loss - f_star
        valid = np.isfinite(gap) & (steps[:, None] <= taken[None, :])
    resolution = int(np.diff(steps).max()) if steps.size > 1 else 1
    hits = np.full((len(exponents), n), np.nan)
    table = []
    for t, k in enumerate(exponents):
        target = 10.0 ** k
        ok = valid & (gap <= target)
        reached = ok.any(axis=0)
        first = steps[np.argmax(ok, axis=0)]
        hits[t] = np.where(reached, first, np.nan)
        spent = np.where(reached, first, taken).astype(float)
        s = int(reached.sum())
        table.append({"target": target, "exponent": k, "successes": s, "n": n,
                      "aRT": float(spent.sum() / s) if s else math.inf})
    reached_steps = np.sort(hits[np.isfinite(hits)])
    total = hits.size
    return {"table": table, "hit_steps": hits, "ecdf_steps": reached_steps,
            "ecdf_fraction": np.arange(1, reached_steps.size + 1) / max(total, 1),
            "resolution": resolution, "f_star": float(f_star)}


# ----------------------------------------------------------------------------- sharpness

# The "late" part of a sharpness curve: its last 30 % of steps (the edge-of-stability window).
TAIL_FRACTION = 0.3


def sharpness_summary(arrays: dict, steps_taken: np.ndarray,
                      tail: float = TAIL_FRACTION) -> dict:
    """Curves and scalars of a recorded sharpness curve (see ``sharpness.SharpnessMonitor``).

    Curves ``sharpness``, ``stability_threshold``, ``sharpness_ratio`` (sharpness / threshold):
    the start's own for one start, the median over starts for many. Per start, over the
    evaluations it made: ``sharpness_x0`` (at step 0), ``sharpness_final`` (last), ``sharpness_max``,
    ``sharpness_ratio_max`` and ``sharpness_ratio_tail`` — the median ratio over the last
    ``tail`` of the steps the start took (k ≥ (1 − tail)·steps); metrics are medians over
    starts. ``sharpness_products``: mean Hessian-vector products per evaluation.
    """
    k = arrays["sharpness_steps"]
    lam, ratio, thr = arrays["sharpness"], arrays["sharpness_ratio"], arrays["stability_threshold"]
    n = lam.shape[1] if lam.ndim == 2 else 0
    out_curves, per = {}, {}
    if k.size == 0 or n == 0:
        return {"metrics": {}, "curves": {}, "per_start": {}}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fin = np.where(np.isfinite(lam), lam, np.nan)
        rat = np.where(np.isfinite(ratio), ratio, np.nan)
        for name, a in (("sharpness", fin), ("stability_threshold", thr),
                        ("sharpness_ratio", rat)):
            c = a[:, 0] if n == 1 else row_median(np.where(np.isfinite(a), a, np.nan))
            keep = np.isfinite(c)
            if keep.any():
                out_curves[name] = (k[keep], c[keep])
        first = np.argmax(np.isfinite(fin), axis=0)
        seen = np.isfinite(fin).any(axis=0)
        last = fin.shape[0] - 1 - np.argmax(np.isfinite(fin[::-1]), axis=0)
        cols = np.arange(n)
        late = k[:, None] >= (1.0 - tail) * np.asarray(steps_taken, dtype=float)[None, :]
        per["sharpness_x0"] = np.where(seen & (k[first] == 0), fin[first, cols], np.nan)
        per["sharpness_final"] = np.where(seen, fin[last, cols], np.nan)
        per["sharpness_max"] = np.nanmax(fin, axis=0)
        per["sharpness_ratio_max"] = np.nanmax(rat, axis=0)
        per["sharpness_ratio_tail"] = row_median(np.where(late, rat, np.nan).T)
    metrics = {key: _summary(v) for key, v in per.items()}
    used = arrays["sharpness_products"][np.isfinite(fin)]
    metrics["sharpness_products"] = float(used.mean()) if used.size else math.nan
    return {"metrics": metrics, "curves": out_curves, "per_start": per}


# ----------------------------------------------------------------------------- all together

def _summary(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def analyse(objective: Objective, result: Result, *, optimizer: str = "gd",
            exponents: Sequence[float] = DEFAULT_TARGET_EXPONENTS,
            max_hessian_starts: int = MAX_HESSIAN_STARTS, rel_tol: float = REL_TOL,
            stability: Optional[Stability] = None, sharpness: Optional[dict] = None) -> dict:
    """Every diagnostic of one run, shaped for logging.

    Returns a dict with ``metrics`` (name → float; may hold non-finite values, which a
    tracker must drop), ``tags`` (name → str), ``curves`` (name → (steps, values), finite
    points only), ``table`` (the fixed-target rows), ``arrays`` (name → numpy array, per start
    or per ECDF point, for an .npz file) and ``parts`` (each diagnostic's own dict).
    For one start the metrics are that start's values; for many, medians over the starts
    (the Hessian ones over the analysed subset) and the fraction of each class / label.
    If f cannot be differentiated twice, the curvature part is left out and the tag
    ``hessian_error`` says why; the rest needs no derivatives and always runs.
    ``stability`` is the optimizer's (default GD's): the stable rates, ``stability_limit``
    (largest stable lr·L) and the tag ``stability_rule`` follow it. ``sharpness`` is what
    ``sharpness.SharpnessMonitor.arrays`` returns, if the run recorded it (see
    `sharpness_summary`).
    Cost: 4·d batched Hessian-vector products plus a few vectorised passes over the trace.
    """
    n = result.n
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    curves: dict[str, tuple] = {}
    arrays: dict[str, np.ndarray] = {}
    parts: dict[str, object] = {}

    stability = stability or gd().stability
    tags["stability_rule"] = stability.rule
    if stability.limit is not None:
        metrics["stability_limit"] = stability.limit
    try:
        sm = smoothness(objective, result, max_starts=max_hessian_starts, rel_tol=rel_tol,
                        stability=stability)
    except Exception as e:  # an objective autograd cannot differentiate twice: say so, go on
        sm = None
        tags["hessian_error"] = f"{type(e).__name__}: {e}"[:500]
    if sm is not None:
        parts["smoothness"] = sm
        for key in ("L_x0", "L_final", "lambda_min_final", "stable_lr_x0", "stable_lr_final",
                    "lr_L_x0", "lr_L_final"):
            metrics[key] = _summary(sm[key])
            arrays[key] = sm[key]
        arrays["hessian_starts"] = sm["starts"]
        arrays["point_class"] = np.array(sm["point_class"])
        classes = set(sm["point_class"])
        tags["final_point"] = classes.pop() if len(classes) == 1 else "mixed"
    if sm is not None and n > 1:
        metrics["L_final_max"] = float(np.nanmax(sm["L_final"])) \
            if np.isfinite(sm["L_final"]).any() else math.nan
        metrics["hessian_starts"] = float(len(sm["starts"]))
        for cls in POINT_CLASSES:
            metrics[f"fraction_point_{cls.replace('-', '_')}"] = \
                sm["point_class"].count(cls) / len(sm["point_class"])

    if sharpness is not None:
        sh = sharpness_summary(sharpness, result.steps)
        parts["sharpness"] = sh
        metrics.update(sh["metrics"])
        curves.update(sh["curves"])
        arrays.update(sharpness)

    tr = taylor_ratio(result.trace, result.steps)
    parts["taylor"] = tr
    ratio = tr["ratio"]
    if ratio.size:
        curve = ratio[:, 0] if n == 1 else row_median(ratio)
        keep = np.isfinite(curve)
        curves["taylor_ratio"] = (tr["steps"][keep], curve[keep])
        arrays["taylor_steps"], arrays["taylor_ratio"] = tr["steps"][keep], curve[keep]
    defined = ratio[tr["defined"]]
    metrics["taylor_ratio_median"] = float(np.median(defined)) if defined.size else math.nan
    metrics["fraction_ascent_steps"] = float(np.mean(defined < 0)) if defined.size else math.nan
    tags["taylor_prediction"] = "first_order" if optimizer == "gd" else "gd_step"

    qc = quadratic_contraction(objective, result)
    if qc is not None:
        parts["contraction"] = qc
        metrics["rho_predicted"] = _summary(qc["rho_predicted"])
        metrics["rho_observed"] = _summary(qc["rho_observed"])
        arrays["rho_predicted"], arrays["rho_observed"] = qc["rho_predicted"], qc["rho_observed"]

    at = atlas(result)
    parts["atlas"] = at
    arrays["atlas_label"] = np.array(at["labels"])
    if n == 1:
        tags["atlas"] = at["labels"][0]
    else:
        # Objectives with many listed minima (Rastrigin: 121) would add as many metrics: keep
        # the MAX_ATLAS_METRICS most frequent labels and sum the others into atlas.rest.
        top = sorted(at["fractions"], key=lambda k: -at["fractions"][k])[:MAX_ATLAS_METRICS]
        metrics.update({f"atlas.{label_key(k)}": v for k, v in at["fractions"].items()
                        if k in top})
        if len(at["fractions"]) > len(top):
            metrics["atlas.rest"] = sum(v for k, v in at["fractions"].items() if k not in top)

    table = []
    if objective.global_minima:
        ft = fixed_target(result.trace, result.steps, objective.f_min, exponents)
        parts["fixed_target"] = ft
        table = ft["table"]
        for row in table:
            name = target_label(row["exponent"])
            metrics[f"aRT.{name}"] = row["aRT"]
            metrics[f"reached.{name}"] = row["successes"] / row["n"]
        arrays["target_hit_steps"] = ft["hit_steps"]
        arrays["target_exponents"] = np.asarray(exponents, dtype=float)
        arrays["ecdf_steps"], arrays["ecdf_fraction"] = ft["ecdf_steps"], ft["ecdf_fraction"]
        if ft["resolution"] > 1:
            tags["fixed_target_resolution"] = str(ft["resolution"])
    return {"metrics": metrics, "tags": tags, "curves": curves, "table": table,
            "arrays": arrays, "parts": parts}
