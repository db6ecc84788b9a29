"""Tests of the objective registry: every objective, several dimensions, and closed forms."""
from __future__ import annotations

import inspect
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from autograd import grad, hessian
from autograd.test_util import check_grads

from gdexp.objectives import MAX_LISTED_MINIMA, OBJECTIVES, Objective, data

CONF = Path(__file__).resolve().parents[1] / "conf" / "objective"

# Every registered objective at its defaults, plus other dimensions and parameters.
EXTRA = [
    ("quadratic", {"dim": 3, "rotate": True, "rotation_seed": 3}),
    ("quadratic", {"eigenvalues": [0.5, 2.0, 40.0], "center": [1.0, -2.0, 0.5], "rotate": True}),
    ("quadratic", {"dim": 1}),
    ("rosenbrock", {"dim": 3}),
    ("rosenbrock", {"dim": 4}),
    ("rosenbrock", {"dim": 7}),
    ("rosenbrock", {"dim": 9}),
    ("rosenbrock", {"dim": 3, "a": 0.5}),
    ("rosenbrock", {"dim": 4, "a": 1.0, "b": 10.0}),
    ("styblinski_tang", {"dim": 1}),
    ("styblinski_tang", {"dim": 3}),
    ("styblinski_tang", {"dim": 12}),
    ("multi_well", {"dim": 2}),
    ("multi_well", {"dim": 3}),
    ("multi_well", {"dim": 2, "tilt": -0.8, "tilt_ratio": 1.0, "height": 2.0}),
    ("multi_well", {"dim": 11}),
    ("rastrigin", {"dim": 1}),
    ("rastrigin", {"dim": 3}),
    ("rastrigin", {"dim": 2, "a": 1.0}),
    # long enough (d >= 8) for numpy's pairwise summation to differ from a sequential one
    ("quadratic", {"dim": 10, "rotate": True, "rotation_seed": 1}),
    ("rastrigin", {"dim": 10}),
]
# Learning objectives on other data sets and models (the registry's defaults cover linear,
# moons and chebyshev).
_DATA = {"diabetes": data.diabetes, "iris": data.iris, "breast_cancer": data.breast_cancer}
LEARNING_EXTRA = [
    ("least_squares", {"data": "diabetes", "l2": 0.1}),
    ("logistic", {"data": "iris"}),
    ("logistic", {"data": "breast_cancer", "l2": 0.1}),
    ("mlp", {"data": "iris", "hidden": [5], "activation": "relu"}),
    ("mlp", {"data": "breast_cancer", "hidden": [4, 3], "activation": "softplus"}),
    ("mlp", {"data": "iris", "hidden": [3], "loss": "mse"}),
]
EXTRA += LEARNING_EXTRA
CASES = [(name, {}) for name in OBJECTIVES] + EXTRA
IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in CASES]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def objective(request) -> Objective:
    name, kwargs = request.param
    kwargs = dict(kwargs)
    if "data" in kwargs:
        kwargs["data"] = _DATA[kwargs["data"]]()
    return OBJECTIVES[name](**kwargs)


def _sample(obj: Objective, n: int, seed: int) -> np.ndarray:
    lower, upper = obj.domain
    rng = np.random.default_rng(seed)
    return rng.uniform(lower[:, None], upper[:, None], size=(obj.dim, n))


# ---------------------------------------------------------------------------------------------
# Generic properties, for every case.

def test_shapes_and_boxes(objective):
    assert objective.name in OBJECTIVES
    lower, upper = objective.domain
    assert lower.shape == upper.shape == (objective.dim,) and np.all(lower < upper)
    wl, wu = objective.plot_window
    assert wl.shape == wu.shape == (objective.dim,) and np.all(wl < wu)
    # every objective lists at least one minimum, or says that it knows none (an MLP)
    assert objective.minima or not objective.minima_complete
    assert len(objective.minima) <= MAX_LISTED_MINIMA
    for m in objective.minima:
        assert m.x.shape == (objective.dim,) and m.x.dtype == float
        assert isinstance(m.value, float) and isinstance(m.is_global, bool)
    x = objective.minima[0].x if objective.minima else (lower + upper) / 2
    assert np.ndim(objective.f(x)) == 0


def test_minima_values_gradients_hessians(objective):
    f = objective.f
    g, h = grad(f), hessian(f)
    for m in objective.minima[:150]:  # rastrigin lists up to 121; others fewer
        assert f(m.x) == pytest.approx(m.value, rel=1e-12, abs=1e-12)
        hm = h(m.x)
        eig = np.linalg.eigvalsh(0.5 * (hm + hm.T))
        scale = max(1.0, np.max(np.abs(eig)))
        assert np.linalg.norm(g(m.x)) <= 1e-9 * scale, m
        assert eig[0] > 1e-8 * scale, (m, eig)


def test_global_minima_flagged_and_lowest(objective):
    if not objective.minima:
        pytest.skip("no minimum known (non-convex model)")
    globals_ = objective.global_minima
    assert len(globals_) >= 1
    f_min = objective.f_min
    tol = 1e-9 * max(1.0, abs(f_min))
    assert all(abs(m.value - f_min) <= tol for m in globals_)
    assert all(m.value > f_min + tol for m in objective.minima if not m.is_global)


def test_minima_distinct(objective):
    if len(objective.minima) < 2:
        pytest.skip("fewer than two minima")
    pts = np.stack([m.x for m in objective.minima])
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert d.min() > 1e-6


def test_minima_read_only(objective):
    if not objective.minima:
        pytest.skip("no minimum known (non-convex model)")
    with pytest.raises(ValueError):
        objective.minima[0].x[0] = 1.0


def test_check_grads(objective):
    np.random.seed(0)  # check_grads draws its random directions from the global generator
    for x in _sample(objective, 4, seed=1).T:
        check_grads(objective.f, modes=["rev"], order=1)(x)


def test_batched_equals_columns(objective):
    x = _sample(objective, 7, seed=2)
    batched = objective.f(x)
    assert batched.shape == (7,)
    columns = np.array([objective.f(x[:, j]) for j in range(7)])
    np.testing.assert_allclose(batched, columns, rtol=1e-12, atol=1e-12)


def test_a_start_does_not_depend_on_its_batch(objective):
    """Values and gradients of one column are bit-identical whether it is alone (the runner's
    (d,) path) or one of n = 2, 7, 100 columns (`gdexp reproduce` re-runs batched jobs alone)."""
    from gdexp.descent import batched_value_and_grad

    vg = batched_value_and_grad(objective.f)
    x = _sample(objective, 100, seed=4)
    for j in (0, 1):
        f1, g1 = vg(x[:, j:j + 1])
        for n in (2, 7, 100):
            fn, gn = vg(x[:, :n])
            assert fn[j] == f1[0], (n, j, fn[j] - f1[0])
            assert np.array_equal(gn[:, j], g1[:, 0]), (n, j, np.abs(gn[:, j] - g1[:, 0]).max())


def test_nothing_below_global_minimum(objective):
    x = _sample(objective, 4000, seed=3)
    values = objective.f(x)
    assert np.all(np.isfinite(values))
    if not objective.minima:
        return  # nothing known to compare with; finiteness still checked
    f_min = objective.f_min
    assert values.min() >= f_min - 1e-9 * max(1.0, abs(f_min))


# ---------------------------------------------------------------------------------------------
# Config files mirror the factories.

@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_conf_file_matches_factory(name):
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg.pop("name") == name
    # a learning objective's data comes from the data group, not from objective.*
    sig = {k: p.default for k, p in inspect.signature(OBJECTIVES[name]).parameters.items()
           if k != "data"}
    assert list(cfg) == list(sig)
    for key, value in cfg.items():
        default = list(sig[key]) if isinstance(sig[key], tuple) else sig[key]
        assert value == default, key
    assert OBJECTIVES[name](**cfg).name == name


# ---------------------------------------------------------------------------------------------
# Closed forms, checked against formulas written here independently.

def test_quadratic_hessian_is_a_with_requested_eigenvalues():
    lam = [0.5, 2.0, 40.0]
    obj = OBJECTIVES["quadratic"](eigenvalues=lam, center=[1.0, -2.0, 0.5], rotate=True)
    a = obj.params["A"]
    h = hessian(obj.f)(np.array([0.3, 0.1, -0.7]))
    np.testing.assert_allclose(h, a, atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(a), lam, rtol=1e-12)
    assert not np.allclose(a, np.diag(np.diag(a)))  # really rotated
    np.testing.assert_array_equal(obj.minima[0].x, [1.0, -2.0, 0.5])
    obj = OBJECTIVES["quadratic"](dim=4, condition=1000.0)
    np.testing.assert_allclose(np.linalg.eigvalsh(hessian(obj.f)(np.zeros(4))),
                               [1.0, 10.0, 100.0, 1000.0], rtol=1e-12)


def test_rosenbrock_closed_forms():
    obj = OBJECTIVES["rosenbrock"](dim=3)
    x = np.array([0.3, -1.2, 2.0])
    by_hand = sum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2 for i in range(2))
    assert obj.f(x) == pytest.approx(by_hand, rel=1e-14)
    # d = 2: the minimum is (a, a²) for any a; Hessian at (1, 1) has ‖H‖ ≈ 1001.6
    obj = OBJECTIVES["rosenbrock"](a=-1.5, b=3.0)
    assert len(obj.minima) == 1 and obj.minima_complete
    np.testing.assert_allclose(obj.minima[0].x, [-1.5, 2.25])
    eig = np.linalg.eigvalsh(hessian(OBJECTIVES["rosenbrock"]().f)(np.ones(2)))
    assert eig[-1] == pytest.approx(1001.6, abs=0.05)


@pytest.mark.parametrize("dim, count, complete", [(2, 1, True), (3, 1, True), (4, 2, True),
                                                  (5, 2, True), (7, 2, True), (8, 2, False)])
def test_rosenbrock_minima_by_dimension(dim, count, complete):
    obj = OBJECTIVES["rosenbrock"](dim=dim)
    assert len(obj.minima) == count and obj.minima_complete is complete
    np.testing.assert_array_equal(obj.global_minima[0].x, np.ones(dim))
    if count == 2:
        local = [m for m in obj.minima if not m.is_global][0]
        assert local.x[0] < -0.7 and np.all(local.x[1:] > 0)


def test_rosenbrock_d4_local_minimum():
    obj = OBJECTIVES["rosenbrock"](dim=4)
    local = [m for m in obj.minima if not m.is_global][0]
    np.testing.assert_allclose(local.x, [-0.7757, 0.6131, 0.3821, 0.1460], atol=1e-4)
    assert local.value == pytest.approx(3.7014, abs=1e-4)


def test_rosenbrock_general_a_is_not_the_chain():
    # For d >= 3 and a not in {0, 1}, (a, a², ...) is not a minimum: f there is (a − a²)² > 0
    obj = OBJECTIVES["rosenbrock"](dim=3, a=0.5)
    assert not obj.minima_complete and obj.params["global_certified"] is False
    assert obj.f(np.array([0.5, 0.25, 0.0625])) == pytest.approx(0.0625)
    assert 0 < obj.f_min < 0.0625


def test_himmelblau_closed_forms():
    obj = OBJECTIVES["himmelblau"]()

    def by_hand(x, y):
        return (x * x + y - 11.0) ** 2 + (x + y * y - 7.0) ** 2

    assert obj.f(np.array([1.0, 2.0])) == 68.0 == by_hand(1.0, 2.0)
    x = np.array([-1.3, 2.7])
    assert obj.f(x) == pytest.approx(by_hand(*x), rel=1e-14)
    expected = [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)]
    assert len(obj.minima) == 4 and all(m.is_global for m in obj.minima)
    for m, e in zip(obj.minima, expected):
        np.testing.assert_allclose(m.x, e, atol=1e-6)
        assert abs(m.value) < 1e-20
    h = hessian(obj.f)
    mx = obj.params["maximum"]
    assert obj.f(mx) == pytest.approx(181.617, abs=1e-3)
    assert np.all(np.linalg.eigvalsh(h(mx)) < 0)
    for s in obj.params["saddles"]:
        eig = np.linalg.eigvalsh(h(s))
        assert eig[0] < 0 < eig[1] and np.linalg.norm(grad(obj.f)(s)) < 1e-10


def test_booth_closed_forms():
    obj = OBJECTIVES["booth"]()
    assert obj.f(np.array([0.0, 0.0])) == 74.0
    assert obj.f(np.array([1.0, 3.0])) == 0.0
    eig = np.linalg.eigvalsh(hessian(obj.f)(np.array([-4.0, 7.0])))
    np.testing.assert_allclose(eig, [2.0, 18.0], atol=1e-12)


@pytest.mark.parametrize("dim", [1, 2, 3, 11])
def test_styblinski_tang_closed_forms(dim):
    obj = OBJECTIVES["styblinski_tang"](dim=dim)
    assert obj.f_min == pytest.approx(-39.16617 * dim, abs=1e-4 * dim)
    assert len(obj.global_minima) == 1
    np.testing.assert_allclose(obj.global_minima[0].x, np.full(dim, -2.903534), atol=1e-6)
    if dim <= 10:
        assert len(obj.minima) == 2 ** dim and obj.minima_complete
        coords = np.unique(np.round(np.concatenate([m.x for m in obj.minima]), 6))
        np.testing.assert_allclose(coords, [-2.903534, 2.746803], atol=1e-6)
    else:
        assert len(obj.minima) == dim + 1 and not obj.minima_complete
    x = np.linspace(-4.0, 4.0, dim)
    assert obj.f(x) == pytest.approx(0.5 * sum(t ** 4 - 16 * t ** 2 + 5 * t for t in x))


def test_muller_brown_closed_forms():
    obj = OBJECTIVES["muller_brown"]()
    params = [(-200, -1, 0, -10, 1, 0), (-100, -1, 0, -10, 0, 0.5),
              (-170, -6.5, 11, -6.5, -0.5, 1.5), (15, 0.7, 0.6, 0.7, -1, 1)]

    def by_hand(x, y):
        return sum(A * math.exp(a * (x - x0) ** 2 + b * (x - x0) * (y - y0) + c * (y - y0) ** 2)
                   for A, a, b, c, x0, y0 in params)

    for p in [(0.1, 0.9), (-1.2, 1.7), (0.8, -0.1)]:
        assert obj.f(np.array(p)) == pytest.approx(by_hand(*p), rel=1e-13)
    expected = [((-0.5582, 1.4417), -146.70), ((0.6235, 0.0280), -108.17),
                ((-0.0500, 0.4667), -80.77)]
    assert len(obj.minima) == 3 and [m.is_global for m in obj.minima] == [True, False, False]
    for m, (x, v) in zip(obj.minima, expected):
        np.testing.assert_allclose(m.x, x, atol=1e-4)
        assert m.value == pytest.approx(v, abs=0.01)
    for s in obj.params["saddles"]:
        eig = np.linalg.eigvalsh(hessian(obj.f)(s))
        assert eig[0] < 0 < eig[1] and np.linalg.norm(grad(obj.f)(s)) < 1e-9


def test_rastrigin_closed_forms():
    obj = OBJECTIVES["rastrigin"](dim=3)
    x = np.array([0.5, -1.25, 2.0])
    by_hand = 10.0 * 3 + sum(t * t - 10.0 * math.cos(2 * math.pi * t) for t in x)
    assert obj.f(x) == pytest.approx(by_hand, rel=1e-13)
    assert obj.f(np.zeros(3)) == 0.0 and obj.f_min == 0.0
    one = OBJECTIVES["rastrigin"](dim=1)
    assert one.minima_complete and len(one.minima) == 63  # k = −31 … 31 for a = 10
    two = OBJECTIVES["rastrigin"](dim=2)
    assert not two.minima_complete and len(two.minima) == 121  # the lattice in [−5.12, 5.12]²
    nearest = np.round(np.stack([m.x for m in two.minima]))
    assert {tuple(p) for p in nearest} == set(itertools.product(range(-5, 6), repeat=2))
    assert not obj.minima_complete and len(obj.minima) == 7  # origin and its 6 neighbours
    # a below 1/(2π²): convex, one minimum
    tiny = OBJECTIVES["rastrigin"](dim=2, a=0.05)
    assert len(tiny.minima) == 1 and tiny.minima_complete


def test_beale_closed_forms():
    obj = OBJECTIVES["beale"]()
    assert obj.f(np.array([3.0, 0.5])) == 0.0
    assert obj.f(np.array([1.0, 1.0])) == 14.203125  # 1.5² + 2.25² + 2.625²

    def by_hand(x, y):
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2

    assert obj.f(np.array([-2.0, 1.3])) == pytest.approx(by_hand(-2.0, 1.3), rel=1e-14)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_multi_well_wells(dim):
    obj = OBJECTIVES["multi_well"](dim=dim)
    assert len(obj.minima) == 2 ** dim and obj.minima_complete
    assert len(obj.global_minima) == 1
    values = [m.value for m in obj.minima]
    assert len(set(np.round(values, 9))) == len(values)  # all depths differ
    # the global well has every coordinate on the negative side (tilt > 0)
    assert np.all(obj.global_minima[0].x < 0)
    c = obj.params["tilts"]
    np.testing.assert_allclose(c, 0.5 * 0.5 ** np.arange(dim))
    for m in obj.minima:  # each coordinate is a root of 4t³ − 4t + c_i
        np.testing.assert_allclose(4 * m.x ** 3 - 4 * m.x + c, 0.0, atol=1e-13)
        assert np.all(np.abs(m.x) > 0.5)


def test_multi_well_symmetric_when_untilted():
    obj = OBJECTIVES["multi_well"](dim=2, tilt=0.0)
    assert len(obj.minima) == 4 and len(obj.global_minima) == 4
    np.testing.assert_allclose(np.abs(np.stack([m.x for m in obj.minima])), 1.0, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Bad arguments.

@pytest.mark.parametrize("name, kwargs, message", [
    ("quadratic", {"dim": 0}, "dim must be an integer >= 1, got 0"),
    ("quadratic", {"dim": 2.5}, "dim must be an integer >= 1, got 2.5"),
    ("quadratic", {"condition": 0.5}, r"condition must be a number in \[1, 1e12\]"),
    ("quadratic", {"condition": 1e308}, r"condition must be a number in \[1, 1e12\]"),
    ("quadratic", {"eigenvalues": [1.0, -2.0]}, r"eigenvalues must all be > 0"),
    ("quadratic", {"eigenvalues": []}, "eigenvalues must be a non-empty list"),
    ("quadratic", {"center": [1.0, 2.0, 3.0]}, r"center must have 2 values"),
    ("quadratic", {"rotate": "yes"}, "rotate must be true or false, got 'yes'"),
    ("quadratic", {"rotation_seed": -1}, "rotation_seed must be an integer >= 0, got -1"),
    ("rosenbrock", {"dim": 1}, "dim must be an integer >= 2, got 1"),
    ("rosenbrock", {"b": 0.0}, r"b must be a number in \(0, 1e8\], got 0.0"),
    ("rosenbrock", {"b": 1e308}, r"b must be a number in \(0, 1e8\], got 1e\+308"),
    ("rosenbrock", {"a": float("nan")}, r"a must be a number in \[-1000, 1000\], got nan"),
    ("styblinski_tang", {"dim": 0}, "dim must be an integer >= 1, got 0"),
    ("styblinski_tang", {"dim": True}, "dim must be an integer >= 1, got True"),
    ("rastrigin", {"dim": -3}, "dim must be an integer >= 1, got -3"),
    ("rastrigin", {"a": -1.0}, r"a must be a number in \(0, 10000\], got -1.0"),
    ("multi_well", {"dim": 0}, "dim must be an integer >= 1, got 0"),
    ("multi_well", {"tilt": 2.0}, r"tilt must be a number with \|tilt\| < .* got 2.0"),
    ("multi_well", {"tilt_ratio": 1.5}, r"tilt_ratio must be a number in \(0, 1\], got 1.5"),
    ("multi_well", {"height": 0}, "height must be a finite number > 0, got 0"),
    ("multi_well", {"height": 1e308}, "height must be a finite number > 0 of magnitude "
                                      r"<= 1e\+100, got 1e\+308"),
])
def test_bad_arguments(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        OBJECTIVES[name](**kwargs)
