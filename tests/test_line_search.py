"""Armijo backtracking in gdexp.descent.run, checked from the trace it records.

Row k of the trace holds f(x_k), ‖∇f(x_k)‖ and the step size t_k accepted at step k (the
last row, written when every start has stopped, holds the untried base rate).
"""
import math

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

from gdexp.descent import Armijo, run
from gdexp.objectives import OBJECTIVES, quadratic
from gdexp.optimizers import gd
from gdexp.schedules import exponential

X0 = np.array([[3.0, -4.0, 0.5, -2.0, 4.0], [2.0, 1.0, -3.0, -4.0, 4.0]])


def descend(objective, x0, lr, ls=Armijo(), **kw):
    kw.setdefault("max_steps", 200)
    result = run(objective, x0, gd(), lr, line_search=ls, **kw)
    tr = result.trace
    assert tr.full_resolution and np.array_equal(tr.steps, np.arange(len(tr.steps)))
    assert np.array_equal(tr.path_steps, tr.steps)
    return result


def check_monotone(result):
    tr = result.trace
    assert np.all(np.diff(tr.loss, axis=0) <= 0), "f increased along the trace"


def check_armijo(result, objective, ls, base_lr):
    """f_{k+1} ≤ f_k − c·t_k·‖g_k‖² at every accepted step, and t_k is the first trial of
    t0, t0·shrink, t0·shrink², … that passes (so the one before it failed)."""
    tr = result.trace
    shrunk = []  # (x_k, f_k, t_k, ‖g_k‖) wherever the search shrank
    for j in range(result.n):
        for k in range(int(result.steps[j])):
            f0, f1 = tr.loss[k, j], tr.loss[k + 1, j]
            t, gn = tr.lr[k, j], tr.grad_norm[k, j]
            assert f1 <= f0 - ls.c * t * gn ** 2, (j, k)
            m = math.log(t / base_lr[k, j]) / math.log(ls.shrink)
            assert abs(m - round(m)) < 1e-9 and round(m) >= 0, (j, k, t, base_lr[k, j])
            if round(m) > 0:
                shrunk.append((tr.path[k, :, j], f0, t, gn))
    if shrunk:  # the larger trial t/shrink must have failed the test
        x = np.stack([s[0] for s in shrunk], axis=1)
        f0, t, gn = (np.array([s[i] for s in shrunk]) for i in (1, 2, 3))
        g = batch_grad(objective, x)
        np.testing.assert_allclose(np.sqrt(np.sum(g * g, axis=0)), gn, rtol=1e-12)
        t_prev = t / ls.shrink
        f_prev_trial = objective.f(x - t_prev * g)
        assert not np.any(f_prev_trial <= f0 - ls.c * t_prev * gn ** 2)


def batch_grad(objective, x):
    """Gradients of every column of x (columns are independent)."""
    return grad(lambda y: anp.sum(objective.f(y)))(np.asarray(x, dtype=float))


def trials_per_step(result, base_lr, ls):
    """Trials the search needed at each step: one more than the number of shrinks."""
    tr = result.trace
    out = np.zeros(result.n, dtype=np.int64)
    for j in range(result.n):
        for k in range(int(result.steps[j])):
            out[j] += round(math.log(tr.lr[k, j] / base_lr[k, j]) / math.log(ls.shrink)) + 1
    return out


def first_accepted(objective, x, t0, ls):
    """The Armijo step size at x for d = −∇f(x), searched by hand."""
    g = batch_grad(objective, x[:, None])[:, 0]
    f0, gg = objective.f(x[:, None])[0], float(g @ g)
    t = t0
    for _ in range(ls.max_iter):
        if objective.f((x - t * g)[:, None])[0] <= f0 - ls.c * t * gg:
            return t
        t *= ls.shrink
    raise AssertionError("no acceptable step")


@pytest.mark.parametrize("ls", [Armijo(), Armijo(c=0.3, shrink=0.7)], ids=["default", "c0.3-s0.7"])
def test_quadratic_monotone_armijo_and_evaluations(ls):
    objective = quadratic(eigenvalues=[1.0, 10.0])
    lr = 1.0  # far beyond 2/λmax = 0.2: the first trial always overshoots
    result = descend(objective, X0, lr, ls, grad_tol=1e-9)
    tr = result.trace
    base = np.full(tr.lr.shape, lr)
    check_monotone(result)
    check_armijo(result, objective, ls, base)
    assert all(s.rule == "grad_tol" for s in result.status)
    assert np.all(result.distance < 1e-8)
    # too-large first trial gets shrunk, to exactly the hand-searched value
    for j in range(result.n):
        assert tr.lr[0, j] < lr
        assert tr.lr[0, j] == first_accepted(objective, X0[:, j], lr, ls)
    # evaluations = one gradient evaluation per iterate visited + every trial
    expected = (result.steps + 1) + trials_per_step(result, base, ls)
    np.testing.assert_array_equal(result.evaluations, expected)
    assert np.all(result.evaluations > 2 * (result.steps + 1))


def test_small_rate_is_accepted_untouched():
    objective = quadratic(eigenvalues=[1.0, 10.0])
    result = descend(objective, X0, 0.05, max_steps=40)
    tr = result.trace
    assert np.all(tr.lr[:-1] == 0.05)
    np.testing.assert_array_equal(result.evaluations, 2 * result.steps + 1)
    check_monotone(result)


def test_per_column_rates_and_schedule_set_the_first_trial():
    objective = quadratic(eigenvalues=[1.0, 10.0])
    lr = np.array([1.0, 0.05, 0.5, 0.01, 3.0])
    sched = exponential(0.9)
    ls = Armijo()
    result = descend(objective, X0, lr, ls, schedule=sched, max_steps=60)
    k = result.trace.steps[:, None]
    base = lr[None, :] * 0.9 ** k
    check_monotone(result)
    check_armijo(result, objective, ls, base)
    assert np.all(result.trace.lr[:-1] <= base[:-1] * (1 + 1e-15))
    expected = (result.steps + 1) + trials_per_step(result, base, ls)
    np.testing.assert_array_equal(result.evaluations, expected)


@pytest.mark.skipif("rosenbrock" not in OBJECTIVES, reason="rosenbrock not in OBJECTIVES yet")
def test_rosenbrock_monotone_armijo_and_evaluations():
    objective = OBJECTIVES["rosenbrock"]()
    assert objective.dim == 2
    x0 = np.array([[-1.2, 0.0, 2.0, -0.5], [1.0, 0.0, 2.0, 1.5]])
    ls = Armijo()
    lr = 1.0
    result = descend(objective, x0, lr, ls, max_steps=200)
    tr = result.trace
    base = np.full(tr.lr.shape, lr)
    check_monotone(result)
    check_armijo(result, objective, ls, base)
    assert np.all(tr.lr[0] < lr)  # the valley walls make t = 1 far too long
    assert np.all(tr.loss[-1] < tr.loss[0])
    expected = (result.steps + 1) + trials_per_step(result, base, ls)
    np.testing.assert_array_equal(result.evaluations, expected)


def test_exhausted_search_never_takes_an_untried_uphill_step():
    objective = quadratic(eigenvalues=[1.0, 10.0])
    result = run(objective, X0[:, :1], gd(), 1.0, max_steps=5, line_search=Armijo(max_iter=1))
    check_monotone(result)
