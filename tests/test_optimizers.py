"""Optimizers against hand-written per-element references (PyTorch's torch.optim formulas).

The references below are written independently of gdexp.optimizers: one scalar at a time,
in plain Python floats, straight from the torch.optim documentation's pseudo-code.
"""
import glob
import inspect
import math
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from gdexp.descent import Status, run
from gdexp.objectives import quadratic
from gdexp.optimizers import OPTIMIZERS, Optimizer, adagrad, adam, gd, momentum, nesterov, rmsprop

K, D, N = 20, 3, 4
CONF = os.path.join(os.path.dirname(__file__), os.pardir, "conf")


# ----------------------------------------------------------------------------- references
# Each reference takes scalar sequences g[k], x[k] of one coordinate and a scalar lr and
# returns the list of steps (x_{k+1} − x_k) that torch.optim would take.

def ref_gd(gs, xs, lr):
    return [-lr * g for g in gs]


def ref_sgd(gs, xs, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    out, buf = [], None
    for g, x in zip(gs, xs):
        if weight_decay != 0:
            g = g + weight_decay * x
        if momentum != 0:
            if buf is None:
                buf = g
            else:
                buf = momentum * buf + (1 - dampening) * g
            if nesterov:
                g = g + momentum * buf
            else:
                g = buf
        out.append(-lr * g)
    return out


def ref_adagrad(gs, xs, lr, lr_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                weight_decay=0.0):
    out, acc, t = [], initial_accumulator_value, 0
    for g, x in zip(gs, xs):
        t += 1
        if weight_decay != 0:
            g = g + weight_decay * x
        clr = lr / (1 + (t - 1) * lr_decay)
        acc = acc + g * g
        out.append(-clr * g / (math.sqrt(acc) + eps))
    return out


def ref_rmsprop(gs, xs, lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                weight_decay=0.0):
    out, sq, gavg, buf = [], 0.0, 0.0, 0.0
    for g, x in zip(gs, xs):
        if weight_decay != 0:
            g = g + weight_decay * x
        sq = alpha * sq + (1 - alpha) * g * g
        if centered:
            gavg = alpha * gavg + (1 - alpha) * g
            avg = math.sqrt(sq - gavg * gavg) + eps
        else:
            avg = math.sqrt(sq) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            out.append(-lr * buf)
        else:
            out.append(-lr * g / avg)
    return out


def ref_adam(gs, xs, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False):
    out, m, v, vmax, t = [], 0.0, 0.0, 0.0, 0
    for g, x in zip(gs, xs):
        t += 1
        if weight_decay != 0:
            g = g + weight_decay * x
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        bc1 = 1 - beta1 ** t
        bc2 = 1 - beta2 ** t
        if amsgrad:
            vmax = max(vmax, v)
            denom = math.sqrt(vmax) / math.sqrt(bc2) + eps
        else:
            denom = math.sqrt(v) / math.sqrt(bc2) + eps
        out.append(-(lr / bc1) * m / denom)
    return out


CASES = [  # (factory, kwargs, reference, reference kwargs)
    (gd, {}, ref_gd, {}),
    (momentum, {}, ref_sgd, dict(momentum=0.9)),
    (momentum, dict(momentum=0.5, dampening=0.3, weight_decay=0.01), ref_sgd,
     dict(momentum=0.5, dampening=0.3, weight_decay=0.01)),
    (momentum, dict(momentum=0.0, dampening=0.5), ref_sgd, dict(momentum=0.0, dampening=0.5)),
    (nesterov, {}, ref_sgd, dict(momentum=0.9, nesterov=True)),
    (nesterov, dict(momentum=0.7, weight_decay=0.1), ref_sgd,
     dict(momentum=0.7, weight_decay=0.1, nesterov=True)),
    (adagrad, {}, ref_adagrad, {}),
    (adagrad, dict(lr_decay=0.1, initial_accumulator_value=0.5, eps=1e-6, weight_decay=0.01),
     ref_adagrad, dict(lr_decay=0.1, initial_accumulator_value=0.5, eps=1e-6, weight_decay=0.01)),
    (rmsprop, {}, ref_rmsprop, {}),
    (rmsprop, dict(alpha=0.9, eps=1e-6, momentum=0.5), ref_rmsprop,
     dict(alpha=0.9, eps=1e-6, momentum=0.5)),
    (rmsprop, dict(centered=True), ref_rmsprop, dict(centered=True)),
    (rmsprop, dict(centered=True, momentum=0.9, weight_decay=0.05), ref_rmsprop,
     dict(centered=True, momentum=0.9, weight_decay=0.05)),
    (adam, {}, ref_adam, {}),
    (adam, dict(beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.01), ref_adam,
     dict(beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.01)),
    (adam, dict(amsgrad=True), ref_adam, dict(amsgrad=True)),
    (adam, dict(beta1=0.0, beta2=0.5, amsgrad=True), ref_adam,
     dict(beta1=0.0, beta2=0.5, amsgrad=True)),
]
IDS = [f"{f.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
       for f, kw, _, _ in CASES]


def sequences(seed=0):
    """Seeded gradients (shrinking over time, so amsgrad's max matters; some exact zeros)
    and iterates (only weight decay reads them)."""
    rng = np.random.default_rng(seed)
    gs = rng.standard_normal((K, D, N)) * np.exp(-0.15 * np.arange(K))[:, None, None]
    gs[:, 0, 0] = 0.0  # a coordinate whose gradient is always zero
    gs[::3, 1, 2] = 0.0
    xs = rng.uniform(-3, 3, (K, D, N))
    return gs, xs


def drive(opt: Optimizer, gs, xs, lr):
    """Steps returned by ``opt`` on the fixed gradient sequence, shape (K, D, N)."""
    state = opt.init(xs[0])
    steps = []
    for g, x in zip(gs, xs):
        step, state = opt.update(g, state, x, lr)
        steps.append(step)
    return np.array(steps)


def reference(ref, kw, gs, xs, lrs):
    out = np.empty_like(gs)
    for i in range(D):
        for j in range(N):
            col = ref([float(v) for v in gs[:, i, j]], [float(v) for v in xs[:, i, j]],
                      float(lrs[j]), **kw)
            out[:, i, j] = col
    return out


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("factory, kw, ref, ref_kw", CASES, ids=IDS)
def test_matches_reference_scalar_lr(factory, kw, ref, ref_kw):
    gs, xs = sequences()
    lr = 0.05
    got = drive(factory(**kw), gs, xs, lr)
    want = reference(ref, ref_kw, gs, xs, np.full(N, lr))
    assert got.shape == (K, D, N) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("factory, kw, ref, ref_kw", CASES, ids=IDS)
def test_matches_reference_per_column_lr(factory, kw, ref, ref_kw):
    gs, xs = sequences(seed=1)
    lrs = np.array([0.1, 0.01, 0.3, 1.0])
    got = drive(factory(**kw), gs, xs, lrs)
    np.testing.assert_allclose(got, reference(ref, ref_kw, gs, xs, lrs), rtol=1e-12,
                               atol=1e-300)
    # and the same as one scalar-lr run per column
    for j, lr in enumerate(lrs):
        alone = drive(factory(**kw), gs, xs, float(lr))
        np.testing.assert_allclose(got[:, :, j], alone[:, :, j], rtol=1e-15, atol=0)


def test_amsgrad_case_exercises_the_max():
    gs, xs = sequences()
    plain = drive(adam(beta1=0.0, beta2=0.5), gs, xs, 0.1)
    ams = drive(adam(beta1=0.0, beta2=0.5, amsgrad=True), gs, xs, 0.1)
    assert not np.allclose(plain, ams)


@pytest.mark.parametrize("factory, kw, ref, ref_kw", CASES, ids=IDS)
def test_linear_in_lr_and_state_independent_of_lr(factory, kw, ref, ref_kw):
    gs, xs = sequences(seed=2)
    opt = factory(**kw)
    state = opt.init(xs[0])
    for k in range(5):  # advance the state a little first
        _, state = opt.update(gs[k], state, xs[k], 0.1)
    lr = np.array([0.3, 2.0, 1e-3, 7.0])
    step1, state1 = opt.update(gs[5], state, xs[5], 1.0)
    step_t, state_t = opt.update(gs[5], state, xs[5], lr)
    np.testing.assert_allclose(step_t, lr * step1, rtol=1e-14, atol=0)
    step_s, _ = opt.update(gs[5], state, xs[5], 0.25)
    np.testing.assert_allclose(step_s, 0.25 * step1, rtol=1e-14, atol=0)
    for a, b in zip(state1, state_t):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


@pytest.mark.parametrize("factory, kw, ref, ref_kw", CASES, ids=IDS)
def test_update_does_not_mutate_its_inputs(factory, kw, ref, ref_kw):
    gs, xs = sequences(seed=3)
    opt = factory(**kw)
    state = opt.init(xs[0])
    _, state = opt.update(gs[0], state, xs[0], 0.1)
    snapshot = [np.copy(a) if isinstance(a, np.ndarray) else a for a in state]
    g, x = gs[1].copy(), xs[1].copy()
    opt.update(g, state, x, 0.1)
    np.testing.assert_array_equal(g, gs[1])
    np.testing.assert_array_equal(x, xs[1])
    for a, b in zip(state, snapshot):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


def test_momentum_zero_is_gd_and_nesterov_differs_from_heavy_ball():
    gs, xs = sequences()
    np.testing.assert_array_equal(drive(momentum(momentum=0.0, dampening=0.7), gs, xs, 0.1),
                                  drive(gd(), gs, xs, 0.1))
    assert not np.allclose(drive(momentum(), gs, xs, 0.1), drive(nesterov(), gs, xs, 0.1))


RUNS = [  # (name, kwargs, lr): suitable rates for eigenvalues (1, 10)
    ("gd", {}, 0.1),
    ("momentum", {}, 0.05),
    ("nesterov", {}, 0.05),
    ("adagrad", {}, 1.0),
    ("rmsprop", {}, 0.01),
    ("rmsprop", dict(centered=True, momentum=0.5), 0.005),
    ("adam", {}, 0.1),
    ("adam", dict(amsgrad=True), 0.1),
]


@pytest.mark.parametrize("name, kw, lr", RUNS,
                         ids=[f"{n}-{kw or 'defaults'}" for n, kw, _ in RUNS])
def test_drives_runner_to_the_minimum_of_a_quadratic(name, kw, lr):
    objective = quadratic(eigenvalues=[1.0, 10.0])
    x0 = np.array([[3.0, -4.0, 0.5, -2.0, 4.0], [2.0, 1.0, -3.0, -4.0, 4.0]])
    result = run(objective, x0, OPTIMIZERS[name](**kw), lr, max_steps=1500, grad_tol=1e-8)
    assert all(s is Status.GRAD_TOL for s in result.status), result.status
    assert result.basin == ("global",) * 5
    assert np.all(result.distance < 1e-7)
    assert np.all(result.f < 1e-14)


ERRORS = [
    (momentum, dict(momentum=1.5), r"momentum must be in \[0, 1\), got 1\.5"),
    (momentum, dict(momentum=-0.1), r"momentum must be in \[0, 1\), got -0\.1"),
    (momentum, dict(dampening=1.5), r"dampening must be in \[0, 1\], got 1\.5"),
    (momentum, dict(weight_decay=-1.0), r"weight_decay must be in \[0, inf\), got -1\.0"),
    (momentum, dict(momentum=float("nan")), r"momentum must be .*got nan"),
    (momentum, dict(momentum="0.9"), r"momentum must be .*got '0\.9'"),
    (nesterov, dict(momentum=0.0), r"momentum must be in \(0, 1\).*momentum > 0.*got 0\.0"),
    (nesterov, dict(dampening=0.1), r"dampening must be 0.*got 0\.1"),
    (adagrad, dict(lr_decay=-0.5), r"lr_decay must be in \[0, inf\), got -0\.5"),
    (adagrad, dict(initial_accumulator_value=-1.0),
     r"initial_accumulator_value must be in \[0, inf\), got -1\.0"),
    (adagrad, dict(eps=0.0), r"eps must be in \(0, inf\), got 0\.0"),
    (rmsprop, dict(alpha=1.0), r"alpha must be in \[0, 1\), got 1\.0"),
    (rmsprop, dict(momentum=1.0), r"momentum must be in \[0, 1\), got 1\.0"),
    (rmsprop, dict(centered="no"), r"centered must be true or false, got 'no'"),
    (rmsprop, dict(eps=-1e-8), r"eps must be in \(0, inf\), got -1e-08"),
    (adam, dict(beta1=1.0), r"beta1 must be in \[0, 1\), got 1\.0"),
    (adam, dict(beta2=-0.1), r"beta2 must be in \[0, 1\), got -0\.1"),
    (adam, dict(eps=float("inf")), r"eps must be in \(0, inf\), got inf"),
    (adam, dict(amsgrad=1), r"amsgrad must be true or false, got 1"),
    (adam, dict(weight_decay=True), r"weight_decay must be in \[0, inf\), got True"),
]


@pytest.mark.parametrize("factory, kw, match", ERRORS,
                         ids=[f"{f.__name__}-{list(kw)[0]}" for f, kw, _ in ERRORS])
def test_argument_errors(factory, kw, match):
    with pytest.raises(ValueError, match=match):
        factory(**kw)


def test_registry_and_yaml_configs_match_factories():
    files = sorted(glob.glob(os.path.join(CONF, "optimizer", "*.yaml")))
    assert {os.path.basename(p)[:-5] for p in files} == set(OPTIMIZERS)
    for path in files:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        name = cfg.pop("name")
        assert name == os.path.basename(path)[:-5]
        lr = cfg.pop("lr")
        # plain GD takes the objective's own rate (${objective_lr:}); the others a number
        assert (lr == "${objective_lr:}") if name == "gd" else (isinstance(lr, float) and lr > 0)
        params = inspect.signature(OPTIMIZERS[name]).parameters
        assert cfg == {k: p.default for k, p in params.items()}, path
        assert isinstance(OPTIMIZERS[name](**cfg), Optimizer)


# ----------------------------------------------------------------------------- torch (optional)

TORCH_CASES = [c for c in CASES if c[0] is not gd]


@pytest.mark.parametrize("factory, kw, ref, ref_kw", TORCH_CASES,
                         ids=[i for i, c in zip(IDS, CASES) if c[0] is not gd])
def test_matches_torch_optim(factory, kw, ref, ref_kw):
    torch = pytest.importorskip("torch")
    gs, _ = sequences(seed=4)
    lr = 0.05
    param = torch.zeros((D, N), dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.linspace(-1.0, 1.0, D * N).reshape(D, N)))
    r = dict(ref_kw)
    if factory in (momentum, nesterov):
        topt = torch.optim.SGD([param], lr=lr, momentum=r.get("momentum", 0.0),
                               dampening=r.get("dampening", 0.0),
                               weight_decay=r.get("weight_decay", 0.0),
                               nesterov=r.get("nesterov", False))
    elif factory is adagrad:
        topt = torch.optim.Adagrad([param], lr=lr, **r)
    elif factory is rmsprop:
        topt = torch.optim.RMSprop([param], lr=lr, **r)
    else:
        b1, b2 = r.pop("beta1", 0.9), r.pop("beta2", 0.999)
        topt = torch.optim.Adam([param], lr=lr, betas=(b1, b2), **r)
    opt = factory(**kw)
    x = param.detach().numpy().copy()
    state = opt.init(x)
    for g in gs:
        step, state = opt.update(g, state, x, lr)
        x = x + step
        param.grad = torch.from_numpy(g.copy())
        topt.step()
        np.testing.assert_allclose(x, param.detach().numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- stability

def _transition(opt, lam, lr):
    """The linear map one update applies to the state on f(x) = ½λx², read off ``update``.

    The state is (x,) for stateless rules and (x, buf) for the momentum ones, taken after the
    first update (count ≥ 1), where every step follows the same recursion."""
    from gdexp.optimizers import EmptyState, MomentumState

    def step(x, buf):
        xs = np.array([[x]])
        state = EmptyState() if buf is None else MomentumState(np.array([[buf]]), 1)
        dx, new = opt.update(lam * xs, state, xs, lr)
        out = [float((xs + dx)[0, 0])]
        if buf is not None:
            out.append(float(new.buf[0, 0]))
        return out

    if isinstance(opt.init(np.zeros((1, 1))), tuple) and len(opt.init(np.zeros((1, 1)))) == 0:
        return np.array([step(1.0, None)]).T
    m = np.array([step(1.0, 0.0), step(0.0, 1.0)]).T
    # momentum = 0: PyTorch keeps no buffer, x never sees it; the recursion is x's alone
    return m[:1, :1] if m[0, 1] == 0.0 else m


def _grows(m, doublings=26):
    """Iterate the recursion 2^doublings (≈ 6.7e7) times by repeated squaring; the size of the
    result tells stable (→ 0) from unstable (→ ∞) even 1e-6 from the threshold."""
    for _ in range(doublings):
        m = m @ m
        s = np.abs(m).max()
        if not np.isfinite(s) or s > 1e100:
            return np.inf
    return np.abs(m).max()


THRESHOLD_CASES = [
    ("gd", {}, 0.1), ("gd", {}, 3.0),
    ("momentum", {"momentum": 0.9}, 0.01), ("momentum", {"momentum": 0.5}, 0.3),
    ("momentum", {"momentum": 0.0}, 0.2),
    ("momentum", {"momentum": 0.9, "dampening": 0.5}, 0.05),
    ("momentum", {"momentum": 0.9, "weight_decay": 0.3}, 0.01),
    ("nesterov", {"momentum": 0.9}, 0.01), ("nesterov", {"momentum": 0.3}, 1.5),
    ("nesterov", {"momentum": 0.99, "weight_decay": 0.1}, 0.2),
]


@pytest.mark.parametrize("name,params,lr", THRESHOLD_CASES)
def test_threshold_separates_stable_from_unstable_on_the_recursion(name, params, lr):
    opt = OPTIMIZERS[name](**params)
    lam_star = float(opt.stability.threshold(lr))
    assert lam_star > 0
    below = _grows(_transition(opt, lam_star * (1 - 1e-6), lr))
    above = _grows(_transition(opt, lam_star * (1 + 1e-6), lr))
    assert below < 1e-6 and above > 1e6, (below, above)


@pytest.mark.parametrize("name,params,expected", [
    ("gd", {}, lambda lr: 2 / lr),
    ("momentum", {"momentum": 0.9}, lambda lr: (2 + 2 * 0.9) / lr),
    ("nesterov", {"momentum": 0.9}, lambda lr: (2 + 2 * 0.9) / ((1 + 2 * 0.9) * lr)),
])
def test_threshold_closed_forms(name, params, expected):
    for lr in (0.01, 0.5):
        assert OPTIMIZERS[name](**params).stability.threshold(lr) == pytest.approx(expected(lr),
                                                                                   rel=1e-14)
    assert gd().stability.stable_lr(10.0) == pytest.approx(0.2)


def test_threshold_holds_in_the_runner():
    """The real runner on ½λx²: 1 % under the heavy-ball threshold converges, 1 % over diverges."""
    opt = momentum(momentum=0.9)
    lr = 0.1
    lam = float(opt.stability.threshold(lr))
    for factor, outcome in ((0.99, "converged"), (1.01, "diverged")):
        q = quadratic(dim=1, eigenvalues=[lam * factor])
        r = run(q, np.array([1.0]), opt, lr, max_steps=6000, grad_tol=1e-8, diverge_above=1e8)
        assert r.status[0].outcome == outcome


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "adam"])
def test_adaptive_rules_have_no_fixed_threshold_and_never_blow_up(name):
    """No threshold: their steps are bounded whatever the curvature, so at lr·λ = 1e4 (far
    beyond any momentum threshold) the iterate on ½λx² stays within a few lr of its start."""
    opt = OPTIMIZERS[name]()
    assert opt.stability.limit is None and opt.stability.threshold(0.1) is None
    assert opt.stability.rule.startswith("none: ")
    lr, lam = 0.1, 1e5
    q = quadratic(dim=1, eigenvalues=[lam])
    r = run(q, np.array([1.0]), opt, lr, max_steps=2000)
    assert r.status[0].outcome == "max_steps"
    assert np.all(np.abs(r.trace.path[:, 0, 0]) <= 1.0 + 20 * lr)
