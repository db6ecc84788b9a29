"""Sharpness along the path against closed forms: known spectra, Rosenbrock's analytic Hessian."""
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gdexp import config, pipeline
from gdexp.descent import run
from gdexp.objectives import OBJECTIVES, quadratic
from gdexp.optimizers import gd, momentum
from gdexp.sharpness import SharpnessMonitor, hvp_at, lanczos_top, start_vector

from .conftest import compose_config, run_cli, store_uri


def _gd_rates(lr):
    return lambda steps: np.full((len(steps), np.size(lr)), lr)


@pytest.mark.parametrize("dim", [3, 60])
def test_sharpness_on_a_quadratic_is_lambda_max_to_1e_8(dim):
    lam = np.linspace(1.0, 100.0, dim) if dim > 3 else np.array([0.5, 2.0, 7.0])
    q = quadratic(dim=dim, eigenvalues=lam.tolist(), rotate=True, rotation_seed=2,
                  center=np.linspace(-1, 1, dim).tolist())
    x0 = np.random.default_rng(0).uniform(-2, 2, (dim, 3))
    mon = SharpnessMonitor(q, 7, tol=1e-10, max_iter=dim)
    lr = 1.0 / lam.max()
    run(q, x0, gd(), lr, max_steps=50, callback=mon)
    arrays = mon.arrays(_gd_rates(lr), gd().stability)
    np.testing.assert_array_equal(arrays["sharpness_steps"], np.arange(0, 51, 7))
    assert np.all(np.abs(arrays["sharpness"] - lam.max()) <= 1e-8 * lam.max())
    np.testing.assert_allclose(arrays["stability_threshold"], 2 / lr, rtol=1e-15)
    np.testing.assert_allclose(arrays["sharpness_ratio"], lam.max() * lr / 2, rtol=1e-8)
    # warm starts from the converged eigenvector: one product per evaluation after the first
    assert np.all(arrays["sharpness_products"][1:] == 1)


def test_default_tolerance_keeps_its_stated_bound():
    """With tol = 1e-3 the error obeys Kato–Temple, |θ − λ| ≤ (tol·θ)²/gap, and θ ≤ λmax."""
    lam = np.linspace(1.0, 100.0, 80)
    q = quadratic(dim=80, eigenvalues=lam.tolist(), rotate=True, rotation_seed=5)
    x = np.random.default_rng(1).normal(size=(80, 4))
    theta, _, used = lanczos_top(hvp_at(q, x), start_vector(80, 4), tol=1e-3)
    gap = lam[-1] - lam[-2]
    assert np.all(theta <= lam[-1] * (1 + 1e-14))
    assert np.all(lam[-1] - theta <= (1e-3 * theta) ** 2 / gap)
    assert np.all(used < 80)


def _rosenbrock_lambda_max(p):
    """λmax of the analytic Hessian of 100(y − x²)² + (1 − x)², for points p (2, k)."""
    x, y = p
    a, b, c = 1200 * x ** 2 - 400 * y + 2, -400 * x, np.full_like(x, 200.0)
    return 0.5 * (a + c) + np.sqrt(0.25 * (a - c) ** 2 + b ** 2)


def test_sharpness_on_rosenbrock_follows_the_analytic_hessian_along_the_path():
    r = OBJECTIVES["rosenbrock"]()
    x0 = np.array([[-1.2, 0.5, 1.5], [1.0, -0.5, 2.0]])
    mon = SharpnessMonitor(r, 25)
    res = run(r, x0, gd(), 1e-3, max_steps=2000, callback=mon)
    arrays = mon.arrays(_gd_rates(1e-3), gd().stability)
    steps = arrays["sharpness_steps"]
    path = res.trace.path[np.searchsorted(res.trace.path_steps, steps)]  # (m, 2, n)
    exact = _rosenbrock_lambda_max(np.moveaxis(path, 1, 0))               # (m, n)
    assert exact.max() / exact.min() > 2  # the curvature really changes along the path
    np.testing.assert_allclose(arrays["sharpness"], exact, rtol=1e-10)


def test_a_start_alone_and_in_a_batch_get_the_same_sharpness():
    r = OBJECTIVES["rosenbrock"](dim=5)
    x0 = np.random.default_rng(3).uniform(-1.5, 1.5, (5, 6))
    both = SharpnessMonitor(r, 10)
    run(r, x0, gd(), 5e-4, max_steps=100, callback=both)
    alone = SharpnessMonitor(r, 10)
    run(r, x0[:, 4], gd(), 5e-4, max_steps=100, callback=alone)
    np.testing.assert_array_equal(np.array(both.values)[:, 4], np.array(alone.values)[:, 0])


def test_sharpness_ratio_uses_the_optimizers_threshold():
    q = quadratic(eigenvalues=[1.0, 10.0])
    opt, lr = momentum(momentum=0.9), 0.05
    mon = SharpnessMonitor(q, 5)
    run(q, np.array([1.0, 1.0]), opt, lr, max_steps=20, callback=mon)
    a = mon.arrays(_gd_rates(lr), opt.stability)
    np.testing.assert_allclose(a["stability_threshold"], 3.8 / lr, rtol=1e-14)
    np.testing.assert_allclose(a["sharpness_ratio"], 10 * lr / 3.8, rtol=1e-12)


def test_sharpness_stops_with_its_start():
    """A start that has stopped gets no more values (NaN), as if it had run alone."""
    q = quadratic(eigenvalues=[1.0, 10.0])
    mon = SharpnessMonitor(q, 1)
    res = run(q, np.array([[1.0, 0.0], [1.0, 0.0]]), gd(), 0.1, max_steps=30, grad_tol=1e-12)
    assert res.steps[1] == 0
    res = run(q, np.array([[1.0, 0.0], [1.0, 0.0]]), gd(), 0.1, max_steps=30, grad_tol=1e-12,
              callback=mon)
    v = np.array(mon.values)
    assert v[0, 1] == pytest.approx(10.0) and np.all(np.isnan(v[1:, 1]))
    assert np.all(np.isfinite(v[:, 0]))


def test_config_keys_are_validated():
    with pytest.raises(config.ConfigError,
                       match=r"^diagnostics.sharpness_every: expected an integer >= 0, got -1$"):
        config.build(compose_config("diagnostics.sharpness_every=-1"))
    with pytest.raises(config.ConfigError,
                       match=r"^diagnostics.sharpness_tol: expected a number in \(0, 1\), got 2$"):
        config.build(compose_config("diagnostics.sharpness_tol=2"))
    plan = config.build(compose_config())
    assert plan.diagnostics["sharpness_every"] == 0 and pipeline.sharpness_monitor(plan) is None


def test_a_run_logs_the_sharpness_curves(outputs):
    proc = run_cli("run", "objective=rosenbrock", "init.x0=[-1.2,1.0]", "optimizer.lr=0.001",
                   "stop.max_steps=300", "diagnostics.sharpness_every=10", "tracking.plots=false",
                   outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(store_uri(outputs))
    run_ = client.search_runs([client.get_experiment_by_name("gdexp").experiment_id])[0]
    hist = {k: client.get_metric_history(run_.info.run_id, k)
            for k in ("sharpness", "stability_threshold", "sharpness_ratio")}
    assert [m.step for m in hist["sharpness"]] == list(range(0, 301, 10))
    assert all(m.value == pytest.approx(2000.0) for m in hist["stability_threshold"])
    for s, q in zip(hist["sharpness"], hist["sharpness_ratio"]):
        assert q.value == pytest.approx(s.value / 2000.0, rel=1e-12)
    assert hist["sharpness"][0].value == pytest.approx(
        float(_rosenbrock_lambda_max(np.array([[-1.2], [1.0]]))[0]), rel=1e-10)
    assert run_.data.metrics["sharpness_x0"] == pytest.approx(hist["sharpness"][0].value)
    assert math.isfinite(run_.data.metrics["sharpness_ratio_tail"])


def _learning_objectives():
    """Each learning objective's exact products: every activation, every loss head, with l2."""
    from gdexp.objectives.data import load
    small = {"moons": load("moons", n_samples=40), "iris": load("iris"),
             "chebyshev": load("chebyshev")}
    out = [("mlp", dict(hidden=[6, 4], activation=a, data=small[d], loss=loss, l2=l2))
           for a in ("tanh", "relu", "softplus")
           for d, loss, l2 in (("chebyshev", None, 0.0), ("moons", None, 0.01),
                               ("iris", None, 0.0), ("iris", "mse", 0.01))]
    out += [("mlp", dict(hidden=[5, 4, 3], activation="tanh", data=small["iris"])),
            ("mlp", dict(hidden=[6], activation="softplus", data=small["moons"], loss="mse"))]
    out += [("logistic", dict(data=small["moons"])), ("logistic", dict(data=small["iris"])),
            ("least_squares", dict(l2=0.1))]
    return out


@pytest.mark.parametrize("name,params", _learning_objectives())
def test_a_networks_own_products_equal_autograds_hessian(name, params):
    """objective.hvp_at (numpy, R-operator) against the Hessian autograd builds column by column;
    the third column has a zero first layer, so ReLU sees its tie z = 0 (derivative ½)."""
    from autograd import hessian

    obj = OBJECTIVES[name](**params)
    assert obj.hvp_at is not None
    rng = np.random.default_rng(4)
    x = rng.normal(size=(obj.dim, 3))
    if name == "mlp":
        width = params["hidden"][0]
        x[: (params["data"].n_features + 1) * width, 2] = 0.0  # first layer's W and b
    v = rng.normal(size=(obj.dim, 3))
    got = hvp_at(obj, x)(v)
    for j in range(3):
        h = hessian(obj.f)(x[:, j])
        np.testing.assert_allclose(got[:, j], h @ v[:, j], rtol=1e-10,
                                   atol=1e-12 * np.abs(h).max())


def test_a_networks_products_do_not_depend_on_the_batch():
    obj = OBJECTIVES["mlp"](hidden=[20, 20])
    rng = np.random.default_rng(5)
    x, v = rng.normal(size=(obj.dim, 7)), rng.normal(size=(obj.dim, 7))
    full = hvp_at(obj, x)(v)
    for n in (1, 2):
        np.testing.assert_array_equal(hvp_at(obj, x[:, 3:3 + n])(v[:, 3:3 + n]), full[:, 3:3 + n])


def test_sharpness_of_a_network_is_the_top_eigenvalue_of_its_hessian():
    """Lanczos on the network's own products against numpy's eigvalsh of autograd's Hessian,
    at the edge-of-stability architecture (481 parameters) after some descent."""
    from autograd import hessian

    obj = OBJECTIVES["mlp"](hidden=[20, 20])
    x0 = obj.init_model(np.random.default_rng(6), 2)
    x = run(obj, x0, gd(), np.array([0.1, 0.3]), max_steps=300).x
    exact = np.array([np.linalg.eigvalsh(hessian(obj.f)(x[:, j]))[-2:] for j in range(2)])
    theta, _, _ = lanczos_top(hvp_at(obj, x), start_vector(obj.dim, 2), tol=1e-10,
                              max_iter=obj.dim)
    np.testing.assert_allclose(theta, exact[:, -1], rtol=1e-8)
    theta, _, used = lanczos_top(hvp_at(obj, x), start_vector(obj.dim, 2), tol=1e-3)
    gap = exact[:, -1] - exact[:, -2]
    assert np.all(theta <= exact[:, -1] * (1 + 1e-12))
    assert np.all(exact[:, -1] - theta <= (1e-3 * theta) ** 2 / gap)


def test_a_networks_sharpness_does_not_depend_on_the_batch():
    """The Lanczos bookkeeping (row-wise sums over d) and the network's products together:
    a start's sharpness curve is bit for bit the same alone, in a pair and among seven."""
    obj = OBJECTIVES["mlp"](hidden=[20, 20])
    x0 = obj.init_model(np.random.default_rng(7), 7)
    lr = np.linspace(0.05, 0.35, 7)
    curves = {}
    for lo, hi in ((0, 7), (3, 5), (3, 4)):
        mon = SharpnessMonitor(obj, 5, tol=1e-3)
        run(obj, x0[:, lo:hi], gd(), lr[lo:hi], max_steps=40, callback=mon)
        curves[(lo, hi)] = np.array(mon.values)
    np.testing.assert_array_equal(curves[(3, 4)][:, 0], curves[(0, 7)][:, 3])
    np.testing.assert_array_equal(curves[(3, 5)], curves[(0, 7)][:, 3:5])
