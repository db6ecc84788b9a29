"""Diagnostics against closed forms and independent computations (quadratics, tiny hand-made cases)."""
import math
import os
import re
import subprocess
import sys

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import hessian
from autograd.extend import defvjp, primitive

from gdexp import diagnostics as D
from gdexp.descent import Armijo, Trace, run
from gdexp.objectives import OBJECTIVES, Minimum, Objective, quadratic
from gdexp.optimizers import gd, momentum

LAM = (0.5, 2.0, 7.0)


@pytest.fixture(autouse=True)
def _outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("GDEXP_OUTPUTS", str(tmp_path))


def tiny(name, f, dim=2, minima=()):
    box = (np.full(dim, -3.0), np.full(dim, 3.0))
    return Objective(name=name, f=f, dim=dim, domain=box, minima=tuple(minima), plot_window=box)


def rotated():
    return quadratic(eigenvalues=LAM, center=[1.0, -2.0, 0.5], rotate=True, rotation_seed=3)


# ----------------------------------------------------------------------------- curvature

def test_batched_hessians_equal_autograd_hessian_per_point():
    def f(x):
        return anp.sin(x[0]) * x[1] ** 2 + x[0] ** 4 + anp.exp(0.3 * x[0] * x[1])

    obj = tiny("wavy", f)
    x = np.random.default_rng(0).uniform(-2, 2, (2, 7))
    h = D.hessians(obj, x)
    for j in range(x.shape[1]):
        np.testing.assert_allclose(h[j], hessian(f)(x[:, j]), rtol=1e-12, atol=1e-12)


def test_quadratic_smoothness_is_lambda_max_everywhere_and_centre_is_a_minimum():
    q = rotated()
    c = q.params["center"]
    starts = np.column_stack([np.random.default_rng(1).uniform(-4, 4, (3, 4)), c])
    lr = 0.1
    r = run(q, starts, gd(), lr, max_steps=3000, grad_tol=1e-9)
    s = D.smoothness(q, r)
    lmax = max(LAM)
    for key in ("L_x0", "L_final"):
        np.testing.assert_allclose(s[key], lmax, rtol=1e-12)
    np.testing.assert_allclose(s["lambda_min_final"], min(LAM), rtol=1e-12)
    np.testing.assert_allclose(s["stable_lr_final"], 2 / lmax, rtol=1e-12)
    np.testing.assert_allclose(s["lr_L_x0"], lr * lmax, rtol=1e-12)
    np.testing.assert_allclose(s["eigenvalues_final"], np.tile(LAM, (5, 1)), rtol=1e-12)
    assert r.steps[-1] == 0 and np.array_equal(r.x[:, -1], c)  # the last start sits at c
    assert s["point_class"] == ("minimum",) * 5


def test_stable_rates_follow_the_optimizer():
    """Heavy ball (β = 0.9) is stable up to lr·L = 3.8, Nesterov up to 3.8/2.8, Adam has no
    fixed threshold: the stable rates and thresholds of the diagnostics say so, not 2/L."""
    q = rotated()
    lmax, lr = max(LAM), 0.05
    for opt, limit in ((momentum(momentum=0.9), 3.8), (D.gd(), 2.0)):
        r = run(q, np.ones(3), opt, lr, max_steps=50)
        s = D.smoothness(q, r, stability=opt.stability)
        np.testing.assert_allclose(s["stable_lr_x0"], limit / lmax, rtol=1e-12)
        np.testing.assert_allclose(s["stability_threshold"], limit / lr, rtol=1e-12)
        a = D.analyse(q, r, stability=opt.stability)
        assert a["metrics"]["stability_limit"] == pytest.approx(limit)
    from gdexp.optimizers import adam, nesterov

    s = D.smoothness(q, run(q, np.ones(3), nesterov(momentum=0.9), lr, max_steps=5),
                     stability=nesterov(momentum=0.9).stability)
    np.testing.assert_allclose(s["stable_lr_x0"], 3.8 / 2.8 / lmax, rtol=1e-12)
    a = D.analyse(q, run(q, np.ones(3), adam(), lr, max_steps=5), stability=adam().stability)
    assert "stability_limit" not in a["metrics"] and math.isnan(a["metrics"]["stable_lr_x0"])
    assert a["tags"]["stability_rule"].startswith("none: ")


def test_point_classes_of_saddle_maximum_and_degenerate_points():
    cases = {
        "saddle": lambda x: x[0] ** 2 - x[1] ** 2,
        "maximum": lambda x: -x[0] ** 2 - 3.0 * x[1] ** 2,
        "degenerate": lambda x: x[0] ** 4 + x[1] ** 2,
    }
    for expected, f in cases.items():
        obj = tiny(expected, f)
        # Starting exactly at the stationary point 0: ∇f = 0, so the start stops at once.
        r = run(obj, np.zeros(2), gd(), 0.1, max_steps=10, grad_tol=1e-12)
        assert r.steps[0] == 0
        s = D.smoothness(obj, r)
        assert s["point_class"] == (expected,), expected
    s = D.smoothness(tiny("saddle", cases["saddle"]),
                     run(tiny("saddle", cases["saddle"]), np.zeros(2), gd(), 0.1, max_steps=0))
    assert s["L_final"][0] == 2.0 and s["lambda_min_final"][0] == -2.0


def test_classification_rules_and_scale_awareness():
    assert D.classify_point([-3.0, 0.0, 2.0], 1e-6) == "saddle"  # signs decide before zeros
    assert D.classify_point([1e-9, 2.0], 1e-6) == "degenerate"
    assert D.classify_point([-2.0, -1e-9], 1e-6) == "degenerate"
    assert D.classify_point([1.0, 2.0], 1e-6) == "minimum"
    assert D.classify_point([np.nan, 2.0], 1e-6) == "non-finite"
    # A tiny but well-conditioned quadratic is still a minimum: the tolerance is relative.
    q = quadratic(eigenvalues=[1e-9, 3e-9])
    r = run(q, np.zeros(2), gd(), 1.0, max_steps=0)
    s = D.smoothness(q, r)
    assert s["point_class"] == ("minimum",)
    assert s["tol"][0] == pytest.approx(D.REL_TOL * 3e-9)
    # Eigenvalues tiny next to the curvature at the start (x⁴ at 1e-4 after starting at 1):
    # degenerate; judged on the final point alone they would look like a minimum.
    e_final, e_start = np.array([[1.2e-7, 1.2e-7]]), np.array([[12.0, 12.0]])
    tol = D.point_tolerance(e_final, e_start)
    assert tol[0] == pytest.approx(12.0 * D.REL_TOL)
    assert D.classify_points(e_final, tol)[0] == "degenerate"
    assert D.classify_points(e_final, D.point_tolerance(e_final))[0] == "minimum"


def test_hessian_sample_is_capped_and_spread_over_the_batch():
    cols = D.hessian_columns(10_000, 2, max_starts=1000)
    assert cols.size == 1000 and cols[0] == 0 and cols[-1] == 9999
    assert D.hessian_columns(50, 2).tolist() == list(range(50))
    assert D.hessian_columns(10, 2000).size == 1  # d² = 4e6 entries exceed the budget


# ----------------------------------------------------------------------------- Taylor ratio

def closed_form_ratios(q, path, lr):
    """1 − lr·gᵀAg/(2‖g‖²) with g = A(x_k − c), from the recorded iterates."""
    a, c = q.params["A"], q.params["center"]
    g = a @ (path - c[:, None])
    return 1.0 - lr * np.einsum("ik,ij,jk->k", g, a, g) / (2.0 * np.sum(g * g, axis=0))


def test_taylor_ratio_equals_quadratic_closed_form_step_by_step():
    q = rotated()
    lrs = np.array([0.01, 0.1, 0.25])
    x0 = np.tile(np.array([[3.0], [-1.0], [2.5]]), (1, 3))
    # grad_tol 1e-6 keeps x − c far above the rounding of x near c = (1, −2, 0.5)
    r = run(q, x0, gd(), lrs, max_steps=300, grad_tol=1e-6)
    t = D.taylor_ratio(r.trace, r.steps)
    assert t["full_resolution"]
    for j, lr in enumerate(lrs):
        ok = t["defined"][:, j]
        k = t["steps"][ok]
        assert k.size > 20 and np.all(k < r.steps[j])
        path = r.trace.path[k, :, j].T
        expected = closed_form_ratios(q, path, lr)
        np.testing.assert_allclose(t["ratio"][ok, j], expected, rtol=1e-8)
        # the same numbers from the module's own closed form, and its bounds 1 − lr·λ/2
        np.testing.assert_allclose(
            D.quadratic_taylor_ratio(q.params["A"], q.params["A"] @ (path - q.params["center"][:, None]), lr),
            expected, rtol=1e-12)
        assert np.all(expected >= 1 - lr * max(LAM) / 2 - 1e-12)
        assert np.all(expected <= 1 - lr * min(LAM) / 2 + 1e-12)
    # small lr: the first-order prediction is nearly exact
    assert np.all(np.abs(t["ratio"][t["defined"][:, 0], 0] - 1) < 0.01 * max(LAM) / 2 + 1e-12)
    # steps a start did not take are undefined
    j = int(np.argmin(r.steps))
    assert not t["defined"][t["steps"] >= r.steps[j], j].any()


def test_taylor_ratio_uses_the_rate_chosen_by_the_line_search():
    q = rotated()
    r = run(q, np.array([3.0, -1.0, 2.5]), gd(), 1.0, max_steps=60,
            line_search=Armijo(c=1e-4, shrink=0.5))
    lr = r.trace.lr[:-1, 0]
    assert len(set(lr.tolist())) > 1 or lr[0] < 1.0  # the search did shrink the rate
    t = D.taylor_ratio(r.trace, r.steps)
    ok = t["defined"][:, 0]
    k = t["steps"][ok]
    a, c = q.params["A"], q.params["center"]
    g = a @ (r.trace.path[k, :, 0].T - c[:, None])
    expected = 1.0 - r.trace.lr[k, 0] * np.einsum("ik,ij,jk->k", g, a, g) / (2 * np.sum(g * g, 0))
    np.testing.assert_allclose(t["ratio"][ok, 0], expected, rtol=1e-7)
    assert np.all(t["ratio"][ok, 0] > 1e-4)  # Armijo's sufficient decrease, c = 1e-4


def test_taylor_ratio_undefined_at_zero_gradient_and_only_consecutive_steps_in_thinned_traces():
    q = quadratic(eigenvalues=[1.0, 4.0])
    r = run(q, np.column_stack([np.zeros(2), [1.0, 1.0]]), gd(), 0.1, max_steps=5)
    t = D.taylor_ratio(r.trace, r.steps)
    assert not t["defined"][:, 0].any() and np.isnan(t["ratio"][:, 0]).all()
    # a thinned trace: only pairs of recorded consecutive steps are used
    r = run(q, np.array([1.0, 1.0]), gd(), 0.01, max_steps=200, trace_budget=8)
    t = D.taylor_ratio(r.trace, r.steps)
    assert not t["full_resolution"]
    assert all(k + 1 in set(r.trace.steps.tolist()) for k in t["steps"])
    assert t["steps"].size < r.trace.steps.size - 1


# ----------------------------------------------------------------------------- contraction

def test_contraction_at_the_optimal_rate_is_kappa_minus_one_over_kappa_plus_one():
    q = rotated()
    lmin, lmax = min(LAM), max(LAM)
    kappa = lmax / lmin
    lr = 2.0 / (lmax + lmin)
    # components along every eigenvector: a generic point in the rotated basis
    x0 = q.params["center"] + np.array([2.0, -1.5, 1.0])
    vecs = np.linalg.eigh(q.params["A"])[1]
    assert np.all(np.abs(vecs.T @ (x0 - q.params["center"])) > 0.1)
    r = run(q, x0, gd(), lr, max_steps=400, grad_tol=1e-12)
    out = D.quadratic_contraction(q, r)
    rho = (kappa - 1) / (kappa + 1)
    assert out["rho_predicted"][0] == pytest.approx(rho, rel=1e-12)
    assert out["rho_observed"][0] == pytest.approx(rho, abs=1e-6)


def test_contraction_at_other_rates_and_beyond_stability():
    q = rotated()
    lrs = np.array([0.05, 0.2, 0.3])  # 0.3 > 2/7: GD diverges along the top eigenvector
    x0 = np.tile((q.params["center"] + np.array([2.0, -1.5, 1.0]))[:, None], (1, 3))
    r = run(q, x0, gd(), lrs, max_steps=400, grad_tol=1e-12, diverge_above=1e12)
    out = D.quadratic_contraction(q, r)
    expected = np.array([max(abs(1 - lr * lam) for lam in LAM) for lr in lrs])
    np.testing.assert_allclose(out["rho_predicted"], expected, rtol=1e-12)
    np.testing.assert_allclose(out["rho_observed"], expected, rtol=1e-6)
    assert r.status[2].outcome == "diverged" and out["rho_observed"][2] > 1
    assert D.quadratic_contraction(tiny("saddle", lambda x: x[0] ** 2 - x[1] ** 2), r) is None


def test_predicted_contraction_with_a_varying_rate_is_the_geometric_mean_of_the_steps():
    q = rotated()
    lr = 0.2
    r = run(q, q.params["center"] + 1.0, gd(), lr, max_steps=10,
            schedule=lambda k: 0.5 if k % 2 else 1.0)
    factors = [max(abs(1 - lr * (0.5 if k % 2 else 1.0) * lam) for lam in LAM) for k in range(10)]
    expected = math.exp(sum(math.log(v) for v in factors) / 10)
    assert D.quadratic_contraction(q, r)["rho_predicted"][0] == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- atlas

def two_wells():
    """(x² − 1)² + 0.3x + y²: a global minimum near x = −1, a local one near x = +1, a saddle between."""
    roots = np.sort(np.roots([4.0, 0.0, -4.0, 0.3]).real)  # f_x = 4x³ − 4x + 0.3

    def f(x):
        return (x[0] ** 2 - 1) ** 2 + 0.3 * x[0] + x[1] ** 2

    val = lambda x: (x ** 2 - 1) ** 2 + 0.3 * x  # noqa: E731
    minima = (Minimum(np.array([roots[0], 0.0]), val(roots[0]), True),
              Minimum(np.array([roots[2], 0.0]), val(roots[2]), False))
    return tiny("two_wells", f, minima=minima), roots


def test_atlas_labels_and_fractions_from_a_real_batched_run():
    obj, roots = two_wells()
    x0 = np.array([[-1.3, -0.7, 1.2, roots[1], 0.5, 2.0],
                   [0.4, -0.2, 0.3, 0.0, 3.0, 2.0]])
    lr = np.array([0.05, 0.05, 0.05, 0.05, 1e-7, 10.0])
    r = run(obj, x0, gd(), lr, max_steps=2000, grad_tol=1e-8, diverge_above=1e12)
    a = D.atlas(r)
    assert a["labels"] == ("min 0 (global)", "min 0 (global)", "min 1",
                           "other stationary point", "max_steps", "diverged")
    assert list(a["fractions"]) == ["min 0 (global)", "min 1", "other stationary point",
                                    "max_steps", "diverged"]
    assert a["fractions"]["min 0 (global)"] == pytest.approx(2 / 6)
    assert all(a["fractions"][k] == pytest.approx(1 / 6) for k in list(a["fractions"])[1:])
    assert sum(a["fractions"].values()) == pytest.approx(1.0)
    # the start that stayed on the stationary point between the wells is a saddle
    assert D.smoothness(obj, r)["point_class"][3] == "saddle"
    assert D.label_key("min 0 (global)") == "min_0_global"
    # metrics: one per label here; with more labels than MAX_ATLAS_METRICS the rarest are summed
    metrics = D.analyse(obj, r)["metrics"]
    assert metrics["atlas.min_0_global"] == pytest.approx(2 / 6) and "atlas.rest" not in metrics
    many = np.repeat(x0[:, :1], 30, axis=1) + np.linspace(-0.1, 0.1, 30)  # all near min 0
    r2 = run(obj, np.column_stack([many, x0]), gd(), np.concatenate([np.full(30, 0.05), lr]),
             max_steps=2000, grad_tol=1e-8, diverge_above=1e12)
    small = D.analyse(obj, r2)["metrics"]
    assert small["atlas.min_0_global"] == pytest.approx(32 / 36)
    old_cap, D.MAX_ATLAS_METRICS = D.MAX_ATLAS_METRICS, 2
    try:
        capped = D.analyse(obj, r2)["metrics"]
    finally:
        D.MAX_ATLAS_METRICS = old_cap
    atlas_keys = sorted(k for k in capped if k.startswith("atlas."))
    assert len(atlas_keys) == 3 and capped["atlas.rest"] == pytest.approx(3 / 36)
    assert capped["atlas.min_0_global"] == pytest.approx(32 / 36)


@pytest.mark.parametrize("name", ["himmelblau", "multi_well"])
def test_atlas_on_registered_objectives_with_several_minima(name):
    if name not in OBJECTIVES:
        pytest.skip(f"{name} is not registered")
    obj = OBJECTIVES[name]()
    centers = np.stack([m.x for m in obj.minima], axis=1)
    offset = 1e-3 * np.random.default_rng(0).standard_normal(centers.shape)
    h = D.hessians(obj, centers)
    lr = 1.0 / np.linalg.eigvalsh(h)[:, -1]  # stable at every minimum
    r = run(obj, centers + offset, gd(), lr, max_steps=20000, grad_tol=1e-9)
    expected = tuple(f"min {i} (global)" if m.is_global else f"min {i}"
                     for i, m in enumerate(obj.minima))
    assert D.atlas(r)["labels"] == expected


# ----------------------------------------------------------------------------- fixed target

def hand_trace():
    """Three starts over steps 0..4 (rows after a start stopped hold its frozen value)."""
    loss = np.array([[5.0, 3.0, 9.0],
                     [2.0, 0.8, 7.0],
                     [0.5, 0.8, 4.0],
                     [0.05, 0.8, 2.0],
                     [0.01, 0.0, 2.0]])  # B's 0.0 at step 4 lies beyond its last step: ignored
    steps = np.arange(5)
    m, n = loss.shape
    trace = Trace(steps, loss, np.ones((m, n)), np.full((m, n), 0.1), steps,
                  np.zeros((m, 1, n)))
    return trace, np.array([4, 1, 3])


def test_fixed_target_by_hand():
    trace, taken = hand_trace()
    out = D.fixed_target(trace, taken, f_star=0.0, exponents=[0, -1, -3])
    # target 1:    A reaches it at step 2 (0.5), B at step 1 (0.8), C never (spends its 3 steps)
    #              aRT = (2 + 1 + 3) / 2 = 3
    # target 0.1:  A at step 3 (0.05); B never (spends 1), C never (spends 3): aRT = 7 / 1 = 7
    # target 1e-3: nobody: aRT = inf
    rows = out["table"]
    assert [r["successes"] for r in rows] == [2, 1, 0]
    assert [r["n"] for r in rows] == [3, 3, 3]
    assert rows[0]["aRT"] == 3.0 and rows[1]["aRT"] == 7.0 and rows[2]["aRT"] == math.inf
    assert rows[1]["target"] == pytest.approx(0.1)
    np.testing.assert_array_equal(out["hit_steps"][0], [2, 1, np.nan])
    np.testing.assert_array_equal(out["hit_steps"][1], [3, np.nan, np.nan])
    assert np.isnan(out["hit_steps"][2]).all()
    np.testing.assert_array_equal(out["ecdf_steps"], [1, 2, 3])
    np.testing.assert_allclose(out["ecdf_fraction"], [1 / 9, 2 / 9, 3 / 9])
    assert out["resolution"] == 1
    # f* shifts every gap: with f* = −1 the 1-target needs f ≤ 0, which only B's ignored row has
    assert D.fixed_target(trace, taken, -1.0, [0])["table"][0]["successes"] == 0


def test_fixed_target_on_a_thinned_trace_reports_its_resolution():
    q = quadratic(eigenvalues=[1.0, 4.0])
    full = run(q, np.array([3.0, 2.0]), gd(), 0.05, max_steps=400)
    thin = run(q, np.array([3.0, 2.0]), gd(), 0.05, max_steps=400, trace_budget=16)
    a = D.fixed_target(full.trace, full.steps, 0.0, [-2])
    b = D.fixed_target(thin.trace, thin.steps, 0.0, [-2])
    assert a["resolution"] == 1 and b["resolution"] > 1
    hit_full, hit_thin = a["hit_steps"][0, 0], b["hit_steps"][0, 0]
    assert hit_full == np.argmax(full.trace.loss[:, 0] <= 1e-2)
    assert hit_full <= hit_thin < hit_full + b["resolution"]


# ----------------------------------------------------------------------------- together

def test_analyse_gives_loggable_names_and_finite_curves():
    q = rotated()
    x0 = np.random.default_rng(2).uniform(-4, 4, (3, 20))
    r = run(q, x0, momentum(0.5), 0.1, max_steps=500, grad_tol=1e-8)
    out = D.analyse(q, r, optimizer="momentum")
    key = re.compile(r"^[A-Za-z0-9_\-. :/]+$")
    assert all(key.match(k) for k in list(out["metrics"]) + list(out["tags"]) + list(out["curves"]))
    assert out["metrics"]["L_final"] == pytest.approx(max(LAM), rel=1e-12)
    assert out["metrics"]["atlas.min_0_global"] == 1.0
    assert out["metrics"]["reached.1e-8"] == 1.0 and math.isfinite(out["metrics"]["aRT.1e-8"])
    assert out["metrics"]["rho_predicted"] == pytest.approx(1 - 0.1 * min(LAM))
    assert out["tags"] == {"final_point": "minimum", "taylor_prediction": "gd_step",
                           "stability_rule": "2/lr"}
    steps, values = out["curves"]["taylor_ratio"]
    assert steps.size > 10 and np.all(np.isfinite(values))
    assert [row["exponent"] for row in out["table"]] == list(D.DEFAULT_TARGET_EXPONENTS)
    one = D.analyse(q, run(q, x0[:, 0], gd(), 0.1, max_steps=500, grad_tol=1e-8))
    assert one["tags"]["atlas"] == "min 0 (global)" and "atlas.min_0_global" not in one["metrics"]


def test_analyse_survives_an_objective_without_second_derivatives():
    @primitive
    def bowl(x):
        return np.sum(x ** 2, axis=0)

    # a first-order-only rule: plain numpy on the incoming values cannot be traced twice
    defvjp(bowl, lambda ans, x: lambda g: g * 2.0 * np.asarray(x, dtype=float))
    obj = tiny("bowl", bowl, minima=[Minimum(np.zeros(2), 0.0, True)])
    r = run(obj, np.array([1.0, -2.0]), gd(), 0.1, max_steps=200, grad_tol=1e-8)
    assert r.basin == ("global",)
    out = D.analyse(obj, r)
    assert "hessian_error" in out["tags"] and "L_final" not in out["metrics"]
    assert out["tags"]["atlas"] == "min 0 (global)" and out["metrics"]["reached.1e-8"] == 1.0


def testrow_median_matches_numpy():
    a = np.random.default_rng(3).standard_normal((6, 9))
    a[a > 1.0] = np.nan
    a[2] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(a, axis=1)
    np.testing.assert_array_equal(D.row_median(a), expected)


def test_core_module_imports_no_edge_libraries():
    code = ("import sys, gdexp.diagnostics; "
            "print([m for m in ('mlflow', 'hydra', 'omegaconf', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert out.stdout.strip() == "[]"
