"""Published claims about gradient descent, each checked on a finished run: the paper's number next to the measured one."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import numpy as np

from .descent import Result
from .objectives import Objective


class Evidence(NamedTuple):
    """What a claim may look at: the run's objective, result, diagnostics and optimizer."""

    objective: Objective
    result: Result
    diag: Optional[dict]          # diagnostics.analyse's output (None when diagnostics are off)
    optimizer: str                # optimizer.name
    params: dict                  # the optimizer's config keys (lr, momentum, ...)


class Row(NamedTuple):
    """One checked statement: ``paper`` is the published number, ``measured`` the run's."""

    key: str
    statement: str
    paper: float
    measured: float
    held: bool


class Claim(NamedTuple):
    reference: str
    check: Callable[[Evidence], list]
    # what the run must record for the check (config.py refuses a run without it):
    # "diagnostics" (diagnostics.enabled) or "sharpness" (diagnostics.sharpness_every > 0)
    needs: tuple = ("diagnostics",)


def _rate_key(lr: float) -> str:
    return f"lr{lr:g}"


def _sharpness(ev: Evidence) -> dict:
    if ev.diag is None or "sharpness" not in ev.diag["parts"]:
        raise ValueError("this claim needs diagnostics.sharpness_every > 0")
    return ev.diag["parts"]["sharpness"]


# ----------------------------------------------------------------------------- edge of stability

EDGE_BAND = (0.85, 1.15)


def edge_of_stability(ev: Evidence) -> list:
    """Cohen et al. 2021: under full-batch GD the sharpness rises to 2/η and hovers there,
    while the loss, non-monotone on short time scales, keeps decreasing over the long run.

    Per learning rate: ``edge`` = the median of sharpness·η/2 over the last 30 % of the
    steps (paper: 1; held if within EDGE_BAND), for the rates whose ratio reached the band's
    lower end at some step (the others are reported with held False and ``reached`` 0);
    ``long_run`` = loss at the end over loss at the start of that window (paper: < 1);
    ``nonmonotone`` = the fraction of steps in the window on which the loss rose (> 0).
    """
    sh = _sharpness(ev)
    per = sh["per_start"]
    t, r = ev.result.trace, ev.result
    rows = []
    for j in range(r.n):
        lr = float(r.lr[j])
        key = _rate_key(lr)
        reached = bool(per["sharpness_ratio_max"][j] >= EDGE_BAND[0])
        tail = float(per["sharpness_ratio_tail"][j])
        rows.append(Row(f"{key}.reached", "sharpness reaches the stability threshold 2/lr",
                        1.0, float(reached), reached))
        rows.append(Row(f"{key}.edge", "median sharpness*lr/2 over the last 30% of steps is 1",
                        1.0, tail, reached and EDGE_BAND[0] <= tail <= EDGE_BAND[1]))
        start = (1 - 0.3) * float(r.steps[j])
        window = (t.steps >= start) & (t.steps <= r.steps[j])
        loss = t.loss[window, j]
        full = np.all(np.diff(t.steps[window]) == 1)
        if loss.size >= 2 and np.all(np.isfinite(loss)):
            ratio = float(loss[-1] / loss[0])
            rises = float(np.mean(np.diff(loss) > 0)) if full else math.nan
        else:
            ratio, rises = math.nan, math.nan
        rows.append(Row(f"{key}.long_run", "the loss still decreases over the window "
                        "(end/start < 1)", 1.0, ratio, ratio < 1.0))
        rows.append(Row(f"{key}.nonmonotone", "the loss rises on some steps of the window "
                        "(fraction > 0)", 0.0, rises, rises > 0.0))
    return rows


# ----------------------------------------------------------------------------- catapult

def catapult(ev: Evidence) -> list:
    """Lewkowycz et al. 2020, the uv model: with λ0 the curvature at the start, ηλ0 < 2
    converges with the loss never rising; 2 < ηλ0 < 4 the loss spikes (catapults), then
    converges at a flatter point with final curvature below 2/η; ηλ0 > 4 diverges.

    Per start, keyed by its measured ηλ0 (from the sharpness at step 0): ``spike`` = max loss /
    initial loss over the steps taken; ``final_ratio`` = η·λ_final/2; ``diverged`` (0/1).
    """
    sh = _sharpness(ev)
    per = sh["per_start"]
    r, t = ev.result, ev.result.trace
    rows = []
    for j in range(r.n):
        lr = float(r.lr[j])
        x = lr * float(per["sharpness_x0"][j])
        taken = t.steps <= r.steps[j]
        loss = t.loss[taken, j]
        finite = loss[np.isfinite(loss)]
        spike = float(finite.max() / loss[0]) if finite.size else math.nan
        diverged = r.status[j].outcome == "diverged"
        key = f"x{x:.2f}"
        if x < 2:
            rows.append(Row(f"{key}.lazy.spike", "eta*lambda0 < 2: the loss never rises "
                            "(max/initial = 1)", 1.0, spike, spike <= 1.0 and not diverged))
        elif x < 4:
            final = lr * float(per["sharpness_final"][j]) / 2
            rows.append(Row(f"{key}.catapult.spike", "2 < eta*lambda0 < 4: the loss spikes "
                            "(max/initial > 1)", 1.0, spike, spike > 1.0 and not diverged))
            rows.append(Row(f"{key}.catapult.final_ratio", "... and converges where the "
                            "curvature is below 2/lr (lr*lambda_final/2 < 1)", 1.0, final,
                            final < 1.0 and r.status[j].outcome == "converged"))
        else:
            rows.append(Row(f"{key}.divergent", "eta*lambda0 > 4: the descent diverges",
                            1.0, float(diverged), diverged))
    return rows


# ----------------------------------------------------------------------------- momentum rates

RATE_TOL = 0.02


def _optimal(method: str, lo: float, hi: float) -> dict:
    """The textbook parameters and linear rate on a quadratic with spectrum [lo, hi]."""
    k = hi / lo
    if method == "gd":
        return {"lr": 2 / (hi + lo), "momentum": 0.0, "rate": (k - 1) / (k + 1)}
    if method == "heavy_ball":
        q = (math.sqrt(k) - 1) / (math.sqrt(k) + 1)
        return {"lr": 4 / (math.sqrt(hi) + math.sqrt(lo)) ** 2, "momentum": q * q, "rate": q}
    q = (math.sqrt(k) - 1) / (math.sqrt(k) + 1)
    return {"lr": 1 / hi, "momentum": q, "rate": 1 - 1 / math.sqrt(k)}


def momentum_rates(ev: Evidence) -> list:
    """Polyak 1964 and Nesterov 1983 on a quadratic with condition number κ: GD at 2/(L + μ)
    contracts by (κ − 1)/(κ + 1), heavy ball at lr = 4/(√L + √μ)², β = ((√κ−1)/(√κ+1))² by
    (√κ − 1)/(√κ + 1), Nesterov at lr = 1/L, β = (√κ−1)/(√κ+1) by 1 − 1/√κ.

    The method is read from the run (momentum with β = 0 is GD); ``params_optimal`` checks
    that the run used the optimal parameters (to 1e-9), ``rate`` compares the observed
    linear rate (``rho_observed``: the geometric mean contraction of ‖x − c‖ over the second
    half of the usable path) with the theory, within RATE_TOL relative.
    """
    lam = np.asarray(ev.objective.params.get("eigenvalues"), dtype=float)
    if ev.diag is None or "contraction" not in ev.diag["parts"]:
        raise ValueError("this claim needs a quadratic with eigenvalues and diagnostics")
    beta = float(ev.params.get("momentum", 0.0))
    method = ("nesterov" if ev.optimizer == "nesterov" else
              "gd" if ev.optimizer == "gd" or beta == 0.0 else "heavy_ball")
    best = _optimal(method, float(lam.min()), float(lam.max()))
    lr = float(ev.result.lr[0])
    ok = (abs(lr / best["lr"] - 1) <= 1e-9
          and abs(beta - best["momentum"]) <= 1e-9 * max(best["momentum"], 1.0))
    observed = float(np.median(ev.diag["parts"]["contraction"]["rho_observed"]))
    return [Row(f"{method}.params_optimal", "the run uses the optimal parameters", 1.0,
                float(ok), ok),
            Row(f"{method}.rate", "observed linear rate equals the theory (within 2%)",
                best["rate"], observed, abs(observed / best["rate"] - 1) <= RATE_TOL)]


# ----------------------------------------------------------------------------- saddles

def saddle_avoidance(ev: Evidence) -> list:
    """Lee et al. 2016: GD with a step below 1/L from a random start converges to a strict
    saddle with probability 0; from a start on a saddle's stable manifold it does converge
    to the saddle. Here the stable manifold is the line x₀ = 0 (``strict_saddle``).

    The final point's class comes from its Hessian (diagnostics' point classes). Rows:
    ``random.at_saddle`` = fraction of the starts off the manifold that end at a saddle
    (paper: 0); ``manifold.at_saddle`` = the same for starts on it (1), when there are any.
    """
    if ev.diag is None or "smoothness" not in ev.diag["parts"]:
        raise ValueError("this claim needs the Hessian diagnostics")
    sm = ev.diag["parts"]["smoothness"]
    cols = sm["starts"]
    cls = np.array(sm["point_class"])
    on = ev.result.x0[0, cols] == 0.0
    converged = np.array([ev.result.status[j].outcome == "converged" for j in cols])
    rows = []
    if (~on).any():
        frac = float(np.mean(cls[~on] == "saddle"))
        rows.append(Row("random.at_saddle", "random starts never end at the strict saddle",
                        0.0, frac, frac == 0.0 and bool(converged[~on].all())))
    if on.any():
        frac = float(np.mean(cls[on] == "saddle"))
        rows.append(Row("manifold.at_saddle", "starts on its stable manifold end at the "
                        "saddle", 1.0, frac, frac == 1.0 and bool(converged[on].all())))
    return rows


# ----------------------------------------------------------------------------- heavy-ball cycle

def heavy_ball_cycle(ev: Evidence) -> list:
    """Lessard, Recht & Packard 2016: on their strongly convex 1-D function (``lessard``,
    m = 1, L = 25) heavy ball with α = 1/9, β = 4/9 (optimal for quadratics with these
    constants) from x₀ ∈ [3.07, 3.46] ends on a cycle of period 3, while GD converges.

    Heavy ball: ``period`` = the smallest p ≤ 10 with |x_{k+p} − x_k| ≤ 1e-9 over the last
    third of the path (paper: 3; NaN when none), ``distance`` = the smallest |x_k − x*| there
    (paper: > 0, i.e. no convergence; held when > 0.1). GD: ``distance`` = the final
    distance to the minimum (paper: 0; held when the run converged to within 1e-6).
    """
    r, t = ev.result, ev.result.trace
    beta = float(ev.params.get("momentum", 0.0))
    path = t.path[:, 0, 0]
    if ev.optimizer == "gd" or beta == 0.0:
        dist = float(abs(r.x[0, 0]))
        return [Row("gd.distance", "gradient descent converges to the minimum", 0.0, dist,
                    dist <= 1e-6 and r.status[0].outcome == "converged")]
    full = np.all(np.diff(t.path_steps) == 1)
    late = path[2 * len(path) // 3:] if full else np.zeros(0)
    period = math.nan
    for p in range(1, 11):
        if late.size > p and np.all(np.abs(late[p:] - late[:-p]) <= 1e-9):
            period = float(p)
            break
    dist = float(np.min(np.abs(late))) if late.size else math.nan
    return [Row("heavy_ball.period", "heavy ball ends on a cycle of period 3", 3.0, period,
                period == 3.0),
            Row("heavy_ball.distance", "... that stays away from the minimum", 0.0, dist,
                dist > 0.1)]


CLAIMS: dict[str, Claim] = {
    "edge_of_stability": Claim(
        "J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, 'Gradient descent on neural "
        "networks typically occurs at the edge of stability', ICLR 2021", edge_of_stability,
        ("sharpness",)),
    "catapult": Claim(
        "A. Lewkowycz, Y. Bahri, E. Dyer, J. Sohl-Dickstein, G. Gur-Ari, 'The large learning "
        "rate phase of deep learning: the catapult mechanism', arXiv:2003.02218 (2020)",
        catapult, ("sharpness",)),
    "momentum_rates": Claim(
        "B. T. Polyak, 'Some methods of speeding up the convergence of iteration methods', "
        "USSR Comput. Math. Math. Phys. 4 (1964); Y. Nesterov, Introductory Lectures on "
        "Convex Optimization (2004), §2.2", momentum_rates),
    "saddle_avoidance": Claim(
        "J. D. Lee, M. Simchowitz, M. I. Jordan, B. Recht, 'Gradient descent only converges "
        "to minimizers', COLT 2016", saddle_avoidance),
    "heavy_ball_cycle": Claim(
        "L. Lessard, B. Recht, A. Packard, 'Analysis and design of optimization algorithms "
        "via integral quadratic constraints', SIAM J. Optim. 26 (2016)", heavy_ball_cycle, ()),
}


def evaluate(name: str, ev: Evidence) -> dict:
    """``metrics`` claim.<key>.paper / claim.<key>.measured and ``tags`` claim.<key>.held,
    claim.<key>.statement, claim (the name), claim.reference, claim.held (all rows held)."""
    claim = CLAIMS[name]
    try:
        rows = claim.check(ev)
        error = None
    except ValueError as e:  # the run lacks what the claim needs: say so on the run
        rows, error = [], str(e)
    metrics, tags = {}, {"claim": name, "claim.reference": claim.reference}
    for row in rows:
        metrics[f"claim.{row.key}.paper"] = row.paper
        metrics[f"claim.{row.key}.measured"] = row.measured
        tags[f"claim.{row.key}.held"] = str(bool(row.held)).lower()
        tags[f"claim.{row.key}.statement"] = row.statement
    tags["claim.held"] = str(bool(rows) and all(r.held for r in rows)).lower()
    if error:
        tags["claim.error"] = error
    return {"metrics": metrics, "tags": tags, "rows": rows}
