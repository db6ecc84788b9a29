"""The runner against closed forms: GD on quadratics, stopping rules, batching, bounded traces."""
from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np
import pytest

from gdexp.descent import Status, run
from gdexp.objectives import Minimum, Objective, quadratic
from gdexp.optimizers import gd


def line(lam: float = 2.0) -> Objective:
    """f(x) = ½ λ x² in 1-D, written here independently of the registry."""
    def f(x):
        return 0.5 * lam * anp.sum(x * x, axis=0)

    box = (np.array([-5.0]), np.array([5.0]))
    return Objective("line", f, 1, box, (Minimum(np.zeros(1), 0.0, True),), box)


def test_iterates_follow_the_matrix_power_closed_form():
    obj = quadratic(eigenvalues=[1.0, 4.0, 9.0], rotate=True, rotation_seed=3)
    a = obj.params["A"]
    x0 = np.array([1.0, -2.0, 0.5])
    lr = 0.05
    r = run(obj, x0, gd(), lr, max_steps=40)
    m = np.eye(3) - lr * a
    for k in (1, 7, 40):
        expected = np.linalg.matrix_power(m, k) @ x0
        np.testing.assert_allclose(r.trace.path[k, :, 0], expected, rtol=1e-12, atol=1e-15)


def test_optimal_rate_contracts_by_kappa_ratio():
    lam_min, lam_max = 1.0, 10.0
    obj = quadratic(eigenvalues=[lam_min, lam_max])
    kappa = lam_max / lam_min
    r = run(obj, np.array([3.0, -2.0]), gd(), 2 / (lam_max + lam_min), max_steps=30)
    norms = np.linalg.norm(r.trace.path[:, :, 0], axis=1)
    np.testing.assert_allclose(norms[1:] / norms[:-1], (kappa - 1) / (kappa + 1), rtol=1e-10)


@pytest.mark.parametrize("factor, outcome", [(0.99, "converged"), (1.01, "diverged")])
def test_stable_iff_lr_below_two_over_lambda_max(factor, outcome):
    obj = quadratic(eigenvalues=[1.0, 10.0])
    r = run(obj, np.array([1.0, 1.0]), gd(), factor * 2 / 10.0, max_steps=20000,
            grad_tol=1e-8, diverge_above=1e10)
    assert r.status[0].outcome == outcome


def test_grad_tol_fires_at_the_closed_form_step():
    lam, lr, x0, tol = 2.0, 0.1, 3.0, 1e-6
    # |g_k| = λ|x0|(1 − lr λ)^k ≤ tol
    expected = math.ceil(math.log(tol / (lam * x0)) / math.log(1 - lr * lam))
    r = run(line(lam), np.array([x0]), gd(), lr, max_steps=10_000, grad_tol=tol)
    assert r.status == (Status.GRAD_TOL,)
    assert r.steps[0] == expected
    assert r.grad_norm[0] <= tol < lam * x0 * (1 - lr * lam) ** (expected - 1)


def test_step_tol_fires_at_the_closed_form_step():
    lam, lr, x0, tol = 2.0, 0.1, 3.0, 1e-5
    # |x_k − x_{k−1}| = lr λ |x0| (1 − lr λ)^(k−1) ≤ tol
    expected = 1 + math.ceil(math.log(tol / (lr * lam * x0)) / math.log(1 - lr * lam))
    r = run(line(lam), np.array([x0]), gd(), lr, max_steps=10_000, step_tol=tol)
    assert r.status == (Status.STEP_TOL,) and r.steps[0] == expected


def test_value_tol_fires_at_the_closed_form_step():
    lam, lr, x0, tol = 2.0, 0.1, 3.0, 1e-9
    q = 1 - lr * lam
    # |f_k − f_{k−1}| = ½ λ x0² q^(2k−2) (1 − q²) ≤ tol
    expected = 1 + math.ceil(math.log(tol / (0.5 * lam * x0**2 * (1 - q * q))) / math.log(q * q))
    r = run(line(lam), np.array([x0]), gd(), lr, max_steps=10_000, value_tol=tol)
    assert r.status == (Status.VALUE_TOL,) and r.steps[0] == expected


def test_zero_tolerances_disable_rules_and_budget_stops():
    r = run(line(), np.array([1.0]), gd(), 0.1, max_steps=25)
    assert r.status == (Status.MAX_STEPS,) and r.steps[0] == 25
    assert r.trace.steps[-1] == 25 and len(r.trace.steps) == 26


def test_overflow_is_a_result_not_an_exception():
    r = run(line(), np.array([1.0]), gd(), 5.0, max_steps=10_000)  # |1 − lr λ| = 9
    assert r.status == (Status.NON_FINITE,)
    assert r.status[0].outcome == "diverged" and r.basin == ("none",)
    finite = np.isfinite(r.trace.loss[:, 0])
    assert finite[: r.steps[0]].all() and not finite[-1]


def test_bound_divergence_reports_the_step():
    r = run(line(), np.array([1.0]), gd(), 5.0, max_steps=10_000, diverge_above=1e6)
    # f_k = 9^(2k) > 1e6 first at k = 4 (9^8 ≈ 4.3e7; 9^6 ≈ 5.3e5)
    assert r.status == (Status.BOUND,) and r.steps[0] == 4


def test_finished_starts_stop_moving_while_others_go_on():
    obj = line()
    x0 = np.array([[1e-3, 4.0]])
    r = run(obj, x0, gd(), 0.1, max_steps=1000, grad_tol=1e-4)
    assert r.steps[0] < r.steps[1]
    k0 = r.steps[0]
    path = r.trace.path[:, 0, 0]
    assert np.all(path[k0:] == path[k0])
    single = [run(obj, x0[:, j], gd(), 0.1, max_steps=1000, grad_tol=1e-4) for j in range(2)]
    assert [s.steps[0] for s in single] == list(r.steps)
    np.testing.assert_array_equal(np.concatenate([s.x for s in single], axis=1), r.x)


def test_per_start_learning_rates_match_separate_runs():
    obj = quadratic(eigenvalues=[1.0, 10.0])
    lrs = np.array([0.01, 0.1, 0.19, 0.25])
    x0 = np.array([2.0, 1.0])
    batch = run(obj, np.tile(x0[:, None], (1, 4)), gd(), lrs, max_steps=300, grad_tol=1e-6,
                diverge_above=1e8)
    for j, lr in enumerate(lrs):
        alone = run(obj, x0, gd(), lr, max_steps=300, grad_tol=1e-6, diverge_above=1e8)
        assert alone.status[0] == batch.status[j] and alone.steps[0] == batch.steps[j]
        np.testing.assert_array_equal(alone.x[:, 0], batch.x[:, j])  # bit for bit
        np.testing.assert_array_equal(alone.trace.loss[:, 0], batch.trace.loss[: len(alone.trace.loss), j])


def test_nearest_minimum_and_basin():
    wells = (Minimum(np.array([-1.0]), -1.0, True), Minimum(np.array([2.0]), -0.5, False))

    def f(x):  # any f: only the minima list matters for the labels
        return anp.sum(x * 0.0, axis=0)

    box = (np.array([-3.0]), np.array([3.0]))
    obj = Objective("two", f, 1, box, wells, box)
    r = run(obj, np.array([[-1.001, 1.995, 0.5]]), gd(), 0.1, max_steps=0, basin_tol=0.01)
    assert list(r.nearest) == [0, 1, 0]
    np.testing.assert_allclose(r.distance, [0.001, 0.005, 1.5], atol=1e-12)
    assert r.basin == ("global", "local", "none")


def test_trace_is_thinned_evenly_within_budget():
    r = run(line(), np.array([1.0]), gd(), 1e-6, max_steps=20_000, trace_budget=300,
            path_budget=100)
    t = r.trace
    assert len(t.steps) <= 301 and len(t.path_steps) <= 101
    assert t.steps[0] == 0 and t.steps[-1] == 20_000 and t.path_steps[-1] == 20_000
    gaps = np.diff(t.steps[:-1])
    assert np.all(gaps == gaps[0]) and gaps[0] > 1
    # the recorded values are the values at the recorded steps: x_k = (1 − 2e-6)^k
    np.testing.assert_allclose(t.path[:, 0, 0], (1 - 2e-6) ** t.path_steps, rtol=1e-9)


def test_status_messages_are_fixed():
    assert Status.GRAD_TOL.outcome == "converged" and Status.GRAD_TOL.rule == "grad_tol"
    assert {s.outcome for s in Status} == {"converged", "max_steps", "diverged"}
    assert all(s.message.endswith(".") for s in Status)


@pytest.mark.parametrize("name", ["rosenbrock", "himmelblau", "muller_brown"])
def test_batched_lr_scan_equals_separate_runs_bit_for_bit(name):
    from gdexp.objectives import OBJECTIVES

    obj = OBJECTIVES[name]()
    lower, upper = obj.plot_window
    x0 = lower + 0.3 * (upper - lower)
    lrs = np.array([1e-5, 1e-4, 3e-4, 1e-3])
    batch = run(obj, np.tile(x0[:, None], (1, lrs.size)), gd(), lrs, max_steps=400,
                grad_tol=1e-6, diverge_above=1e10)
    for j, lr in enumerate(lrs):
        alone = run(obj, x0, gd(), lr, max_steps=400, grad_tol=1e-6, diverge_above=1e10)
        assert alone.status[0] == batch.status[j] and alone.steps[0] == batch.steps[j]
        np.testing.assert_array_equal(alone.x[:, 0], batch.x[:, j])
        m = len(alone.trace.steps)
        np.testing.assert_array_equal(alone.trace.loss[:, 0], batch.trace.loss[:m, j])
        np.testing.assert_array_equal(alone.trace.path[:, :, 0], batch.trace.path[:m, :, j])
