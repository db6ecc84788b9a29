"""Learning objectives, data sets and mini-batch SGD, against independent solvers and closed forms."""
from __future__ import annotations

import numpy as np
import pytest
from autograd import grad, hessian
from autograd.test_util import check_grads

from gdexp import config
from gdexp.config import ConfigError
from gdexp.descent import batched_value_and_grad, run
from gdexp.objectives import OBJECTIVES, data
from gdexp.objectives.learning import least_squares, logistic, mlp
from gdexp.optimizers import OPTIMIZERS
from gdexp.sampling import BatchSampler, batch_indices

from .conftest import compose_config

GD = OPTIMIZERS["gd"]()


def _objectives():
    return [least_squares(data.diabetes()), least_squares(data.linear(), l2=0.3),
            logistic(data.breast_cancer()), logistic(data.wine()), logistic(data.moons()),
            mlp(data.chebyshev()), mlp(data.moons(), hidden=[6, 5], activation="softplus"),
            mlp(data.iris(), hidden=[4], activation="relu", loss="mse"),
            mlp(data.iris(), hidden=[4], l2=0.01)]


LEARNING = _objectives()
IDS = [f"{o.name}-{o.dataset['name']}-{i}" for i, o in enumerate(LEARNING)]


@pytest.fixture(params=range(len(LEARNING)), ids=IDS)
def objective(request):
    return LEARNING[request.param]


# ---------------------------------------------------------------------------- gradients

def test_gradient_matches_central_finite_differences(objective):
    rng = np.random.default_rng(0)
    x = objective.init_model(rng, 1)[:, 0] + 0.1 * rng.standard_normal(objective.dim)
    g = grad(objective.f)(x)
    h = 1e-6
    for i in rng.choice(objective.dim, size=min(objective.dim, 12), replace=False):
        e = np.zeros(objective.dim)
        e[i] = h
        fd = (objective.f(x + e) - objective.f(x - e)) / (2 * h)
        assert abs(fd - g[i]) <= 1e-6 * max(1.0, abs(g[i])), (i, fd, g[i])


def test_check_grads_full_and_minibatch(objective):
    np.random.seed(0)
    x = objective.init_model(np.random.default_rng(1), 1)[:, 0]
    check_grads(objective.f, modes=["rev"], order=2)(x)
    idx = batch_indices(0, 3, objective.n_samples, min(7, objective.n_samples))
    check_grads(lambda z: objective.f(z, idx), modes=["rev"], order=1)(x)


def test_minibatch_values_do_not_depend_on_the_batch_of_starts(objective):
    vg = batched_value_and_grad(objective.f)
    x = objective.init_model(np.random.default_rng(2), 100)
    idx = batch_indices(5, 2, objective.n_samples, max(1, objective.n_samples // 3))
    f1, g1 = vg(x[:, :1], idx)
    for n in (2, 7, 100):
        fn, gn = vg(x[:, :n], idx)
        assert fn[0] == f1[0] and np.array_equal(gn[:, 0], g1[:, 0]), n


def test_minibatch_loss_is_the_mean_over_the_batch(objective):
    x = objective.init_model(np.random.default_rng(3), 1)[:, 0]
    idx = np.array([0, 2, 3])
    per_sample = [objective.f(x, np.array([i])) for i in idx]
    # the ℓ2 penalty is in the batch loss once and in every per-sample term once: no change
    diff = objective.f(x, idx) - np.mean(per_sample)
    assert abs(diff) <= 1e-12 * max(1.0, abs(objective.f(x, idx)))


# ---------------------------------------------------------------------------- exact minima

@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_least_squares_minimum_is_lstsq_and_l_mu_exact(l2):
    ds = data.diabetes()
    obj = least_squares(ds, l2=l2)
    a = np.hstack([ds.x_train, np.ones((ds.n_samples, 1))])
    m, d = a.shape
    # independent: the normal equations solved by lstsq on the augmented system
    if l2:
        w = np.linalg.lstsq(np.vstack([a, np.sqrt(m * l2) * np.eye(d)]),
                            np.concatenate([ds.y_train, np.zeros(d)]), rcond=None)[0]
    else:
        w = np.linalg.lstsq(a, ds.y_train, rcond=None)[0]
    x_star = obj.minima[0].x
    # parameters are (w, b): the bias is the design's last column here too
    np.testing.assert_allclose(x_star, w, rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(grad(obj.f)(x_star)) <= 1e-12
    h = hessian(obj.f)(x_star)
    eig = np.linalg.eigvalsh(h)
    assert obj.constants["L"] == pytest.approx(eig[-1], rel=1e-12)
    assert obj.constants["mu"] == pytest.approx(eig[0], rel=1e-9)
    # the Hessian of a quadratic is constant: the same at any point
    np.testing.assert_allclose(hessian(obj.f)(np.ones(d)), h, rtol=1e-12, atol=1e-14)
    if not l2:  # the values FACTS.md measured for standardised diabetes (all 442 rows)
        full = least_squares(data.diabetes(test_fraction=0.0))
        assert full.constants["L"] == pytest.approx(4.02, abs=0.01)
        assert full.constants["mu"] == pytest.approx(0.0086, abs=0.0001)


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "iris", "moons"])
def test_logistic_minimum_has_zero_gradient_and_matches_bfgs(name):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    obj = logistic(data.DATASETS[name]())
    x_star = obj.minima[0].x
    assert np.linalg.norm(grad(obj.f)(x_star)) <= 1e-10
    res = scipy_optimize.minimize(lambda z: float(obj.f(z)), np.zeros(obj.dim),
                                  jac=lambda z: grad(obj.f)(z), method="BFGS",
                                  options={"gtol": 1e-11, "maxiter": 20000})
    assert np.max(np.abs(res.x - x_star)) <= 1e-6, np.max(np.abs(res.x - x_star))
    assert obj.minima[0].value <= res.fun + 1e-14


def test_logistic_binary_l_is_the_hessian_at_zero_and_bounds_it_elsewhere():
    obj = logistic(data.breast_cancer())
    h0 = np.linalg.eigvalsh(hessian(obj.f)(np.zeros(obj.dim)))
    assert obj.constants["L"] == pytest.approx(h0[-1], rel=1e-10)
    rng = np.random.default_rng(0)
    for _ in range(3):
        e = np.linalg.eigvalsh(hessian(obj.f)(rng.standard_normal(obj.dim)))
        assert e[-1] <= obj.constants["L"] * (1 + 1e-12) and e[0] >= obj.constants["mu"] * 0.999


def test_mlp_knows_no_minimum_and_reports_basin_none():
    obj = mlp(data.chebyshev())
    assert obj.dim == 481 and obj.minima == () and not obj.minima_complete
    x0 = obj.init_model(np.random.default_rng(0), 3)
    res = run(obj, x0, GD, 0.05, max_steps=50)
    assert res.basin == ("none",) * 3 and np.all(np.isfinite(res.f))
    assert np.all(res.f < obj.f(x0))


# ---------------------------------------------------------------------------- data sets

def test_data_sets_split_standardise_and_digest():
    for name, loader in data.DATASETS.items():
        a, b = loader(), loader()
        assert a.digest == b.digest and len(a.digest) == 16, name
        assert data.TASKS[name] == a.task
        assert a.x_train.shape[1] == a.x_test.shape[1]
        if a.params.get("standardize", True) and name != "chebyshev":
            np.testing.assert_allclose(a.x_train.mean(axis=0), 0, atol=1e-12)
            std = a.x_train.std(axis=0)
            assert np.all((np.abs(std - 1) < 1e-12) | (std == 0)), name
    d0, d1 = data.diabetes(seed=0), data.diabetes(seed=1)
    assert d0.digest != d1.digest and d0.x_test.shape == (88, 10)
    assert data.diabetes(test_fraction=0.0).x_test.shape == (0, 10)
    cheb = data.chebyshev()
    np.testing.assert_array_equal(cheb.x_train[:, 0], np.linspace(-1, 1, 20))
    t = cheb.x_train[:, 0]
    np.testing.assert_allclose(cheb.y_train, 8 * t ** 4 - 8 * t ** 2 + 1, atol=1e-12)  # T_4
    moons = data.moons(n_samples=101)
    assert moons.n_samples + moons.x_test.shape[0] == 101 and moons.n_classes == 2


# ---------------------------------------------------------------------------- sampling

def test_epoch_sampling_uses_every_sample_once_per_epoch():
    n, b = 23, 5
    sampler = BatchSampler(7, n, b, "epoch")
    assert sampler.per_epoch == 5
    for epoch in range(3):
        batches = [sampler(epoch * 5 + j) for j in range(5)]
        assert [len(x) for x in batches] == [5, 5, 5, 5, 3]
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(n))
        for j, bt in enumerate(batches):  # the sampler equals the pure function
            np.testing.assert_array_equal(bt, batch_indices(7, epoch * 5 + j, n, b, "epoch"))
    assert not np.array_equal(sampler(0), sampler(5))  # reshuffled each epoch
    assert not np.array_equal(batch_indices(0, 0, n, b), batch_indices(1, 0, n, b))


@pytest.mark.parametrize("sampling", ["epoch", "replacement"])
def test_per_start_sequences_are_each_starts_own(sampling):
    n, b, starts = 23, 5, 4
    sampler = BatchSampler(7, n, b, sampling, starts=starts)
    rows = [sampler(k) for k in range(10)]
    for k, r in enumerate(rows):
        assert r.shape == (starts, len(batch_indices(7, k, n, b, sampling)))  # 5, or 3 last
        for j in range(starts):  # row j is start j's pure function, whatever the other rows
            np.testing.assert_array_equal(r[j], batch_indices(7, k, n, b, sampling, start=j))
            np.testing.assert_array_equal(r[j], BatchSampler(7, n, b, sampling, starts=j + 1)(k)[j])
    for k in range(10):  # start 0 steps on the shared sequence, the others on their own
        np.testing.assert_array_equal(rows[k][0], batch_indices(7, k, n, b, sampling))
    assert not np.array_equal(rows[0][1], rows[0][0])
    assert not np.array_equal(rows[0][1], rows[0][2])
    if sampling == "epoch":  # each start's own epochs use every sample once
        for j in range(starts):
            np.testing.assert_array_equal(np.sort(np.concatenate([r[j] for r in rows[:5]])),
                                          np.arange(n))


def test_a_batch_row_per_start_evaluates_each_start_on_its_own_rows(objective):
    """f(X, idx (n, b)) column j = f(x_j, idx_j) alone: every head, classes as 2-D targets."""
    vg = batched_value_and_grad(objective.f)
    x = objective.init_model(np.random.default_rng(4), 5)
    b = max(1, objective.n_samples // 3)
    idx = np.stack([batch_indices(2, 1, objective.n_samples, b, start=j) for j in range(5)])
    f, g = vg(x, idx)
    for j in range(5):
        alone = lambda z: objective.f(z, idx[j])  # noqa: E731
        assert f[j] == alone(x[:, j])
        assert np.array_equal(g[:, j], grad(alone)(x[:, j]))


def test_a_start_s_batch_as_one_row_of_many_evaluates_as_its_batch_alone(objective):
    """A batched sweep descends SGD jobs of other seeds side by side, a row of batch indices
    per column: column j of f(X, idx (n, b)) must equal the job alone, f(x_j (d, 1), idx_j
    (b,)), bit for bit, for n = 2, 7 and 100."""
    vg = batched_value_and_grad(objective.f)
    x = objective.init_model(np.random.default_rng(6), 100)
    b = max(1, objective.n_samples // 3)
    rows = BatchSampler(0, objective.n_samples, b, streams=[(s, None) for s in range(100)])(3)
    for j in (0, 1):
        f1, g1 = vg(x[:, j:j + 1], batch_indices(j, 3, objective.n_samples, b))
        for n in (2, 7, 100):
            fn, gn = vg(x[:, :n], rows[:n])
            assert fn[j] == f1[0] and np.array_equal(gn[:, j], g1[:, 0]), (n, j)


def test_streams_are_the_sequences_of_their_seeds_and_starts():
    streams = [(3, None), (5, None), (3, 2), (5, 0), (3, None)]
    for sampling in ("epoch", "replacement"):
        sampler = BatchSampler(0, 50, 8, sampling, streams=streams)
        for k in (0, 6, 7, 13):  # 50 = 6·8 + 2: steps 6 and 13 end an epoch on 2 samples
            rows = sampler(k)
            assert rows.shape == (5, 2 if sampling == "epoch" and k % 7 == 6 else 8)
            for row, (seed, start) in zip(rows, streams):
                np.testing.assert_array_equal(row, batch_indices(seed, k, 50, 8, sampling,
                                                                 start=start))


def test_replacement_sampling_is_iid_and_seeded():
    draws = np.concatenate([batch_indices(3, k, 10, 4, "replacement") for k in range(5000)])
    counts = np.bincount(draws, minlength=10) / draws.size
    np.testing.assert_allclose(counts, 0.1, atol=0.01)
    np.testing.assert_array_equal(batch_indices(3, 9, 10, 4, "replacement"),
                                  BatchSampler(3, 10, 4, "replacement")(9))


# ---------------------------------------------------------------------------- mini-batch runner

def _trace_equal(a, b):
    return (np.array_equal(a.x, b.x) and np.array_equal(a.f, b.f)
            and np.array_equal(a.trace.loss, b.trace.loss)
            and np.array_equal(a.trace.grad_norm, b.trace.grad_norm)
            and np.array_equal(a.steps, b.steps))


def test_batch_of_every_sample_equals_full_batch_bit_for_bit():
    obj = mlp(data.moons(), hidden=[8])
    x0 = obj.init_model(np.random.default_rng(0), 3)
    full = run(obj, x0, GD, 0.1, max_steps=60)
    mini = run(obj, x0, GD, 0.1, max_steps=60, batch_size=obj.n_samples, sampling="epoch")
    assert _trace_equal(full, mini)
    np.testing.assert_array_equal(mini.trace.batch_loss, full.trace.loss)


def test_batched_starts_equal_separate_runs_bit_for_bit():
    obj = mlp(data.moons(), hidden=[8])
    x0 = obj.init_model(np.random.default_rng(1), 5)
    kw = dict(max_steps=40, batch_size=16, sampling="epoch", batch_seed=3,
              evaluate=obj.evaluate)
    together = run(obj, x0, OPTIMIZERS["momentum"](), 0.05, **kw)
    for j in range(5):
        alone = run(obj, x0[:, j], OPTIMIZERS["momentum"](), 0.05, **kw)
        assert np.array_equal(alone.x[:, 0], together.x[:, j])
        assert np.array_equal(alone.trace.batch_loss[:, 0], together.trace.batch_loss[:, j])
        assert np.array_equal(alone.trace.loss[:, 0], together.trace.loss[:, j])
        for k, v in together.trace.evals.items():
            assert np.array_equal(alone.trace.evals[k][:, 0], v[:, j]), k


def test_per_start_sgd_steps_each_start_on_its_own_batches():
    obj = logistic(data.wine())  # three classes: cross-entropy on a target row per start
    x0 = np.repeat(obj.init_model(np.random.default_rng(0), 1), 3, axis=1)  # one start, thrice
    kw = dict(max_steps=30, batch_size=16, batch_seed=5)
    shared = run(obj, x0, GD, 0.1, **kw)
    own = run(obj, x0, GD, 0.1, batches="per_start", **kw)
    assert np.array_equal(shared.x[:, 0], shared.x[:, 1]) and np.array_equal(shared.x[:, 0],
                                                                             shared.x[:, 2])
    assert not np.array_equal(own.x[:, 0], own.x[:, 1])
    for j in range(3):  # replay start j's SGD by hand on its own sequence
        z = x0[:, j].copy()
        for k in range(30):
            z = z - 0.1 * grad(lambda w: obj.f(w, batch_indices(5, k, obj.n_samples, 16,
                                                                  start=j)))(z)
        np.testing.assert_allclose(own.x[:, j], z, rtol=0, atol=1e-12)
    assert np.array_equal(run(obj, x0, GD, 0.1, batches="per_start", **kw).x, own.x)


def test_sgd_records_full_loss_on_epochs_and_batch_loss_every_step():
    obj = least_squares(data.linear())
    res = run(obj, np.zeros(obj.dim), GD, 0.05, max_steps=50, batch_size=32,
              evaluate=obj.evaluate)
    per_epoch = -(-obj.n_samples // 32)  # 160 training rows: 5 batches
    np.testing.assert_array_equal(res.trace.steps, list(range(0, 50, per_epoch)) + [50])
    np.testing.assert_array_equal(res.trace.batch_steps, np.arange(51))
    # the recorded loss is the full training loss at that step's point
    x_path = res.trace.path[res.trace.path_steps == 10][0]
    assert res.trace.loss[2, 0] == obj.f(x_path[:, 0])
    assert set(res.trace.evals) == {"test_loss"}
    # an SGD step moves along the batch gradient: replay step 0 by hand
    idx = batch_indices(0, 0, obj.n_samples, 32)
    np.testing.assert_array_equal(res.trace.path[1][:, 0],
                                  -0.05 * grad(lambda z: obj.f(z, idx))(np.zeros(obj.dim)))


def test_sgd_stops_on_full_batch_gradient_at_an_evaluation_step():
    obj = least_squares(data.linear(noise=0.0))
    res = run(obj, np.zeros(obj.dim), GD, 0.1, max_steps=5000, grad_tol=1e-3,
              batch_size=40, eval_every=10)
    assert res.status[0].rule == "grad_tol" and res.steps[0] % 10 == 0
    assert np.linalg.norm(grad(obj.f)(res.x[:, 0])) <= 1e-3


def test_sgd_divergence_is_a_result():
    obj = least_squares(data.linear())
    res = run(obj, np.zeros(obj.dim), GD, 50.0, max_steps=5000, batch_size=16)
    assert res.status[0].outcome == "diverged" and res.steps[0] < 5000


# ---------------------------------------------------------------------------- config

def test_registry_defaults_build_without_data():
    for name in ("least_squares", "logistic", "mlp"):
        obj = OBJECTIVES[name]()
        assert obj.n_samples > 0 and obj.dataset["digest"]


BAD = [
    (["objective=mlp", "data.name=nope"],
     r"^data\.name: expected a data set for objective 'mlp' \(breast_cancer, chebyshev, "
     r"diabetes, digits, iris, linear, moons, wine\), got 'nope'$"),
    (["objective=least_squares"],
     r"^data\.name: expected a regression data set for objective 'least_squares' "
     r"\(chebyshev, diabetes, linear\), got 'none'; choose one with data=NAME$"),
    (["data=diabetes"],
     r"^data\.name: expected none \(objective 'quadratic' takes no data\), got 'diabetes'$"),
    (["objective=logistic", "data=diabetes"],
     r"^data\.name: expected a classification data set for objective 'logistic' "
     r"\(breast_cancer, digits, iris, moons, wine\), got 'diabetes'$"),
    (["objective=mlp", "data=diabetes", "objective.loss=cross_entropy"],
     r"^objective\.loss: expected null or mse for regression data 'diabetes', "
     r"got 'cross_entropy'$"),
    (["objective=mlp", "data=chebyshev", "objective.hidden=[20,0]"],
     r"^objective\.hidden: expected a list of integers > 0, got \[20, 0\]$"),
    (["objective=mlp", "data=chebyshev", "objective.activation=sigmoid"],
     r"^objective\.activation: expected one of tanh, relu, softplus, got 'sigmoid'$"),
    (["objective=mlp", "data=chebyshev", "data.batch_size=0"],
     r"^data\.batch_size: expected null or an integer in \[1, 20\] \(the training samples\), "
     r"got 0$"),
    (["objective=least_squares", "data=diabetes", "data.batch_size=355"],
     r"^data\.batch_size: expected null or an integer in \[1, 354\] \(the training samples\), "
     r"got 355$"),
    (["objective=least_squares", "data=diabetes", "data.test_fraction=1.0"],
     r"^data\.test_fraction: expected a number in \[0, 1\), got 1\.0$"),
    (["objective=least_squares", "data=diabetes", "data.test_fraction=-0.1"],
     r"^data\.test_fraction: expected a number in \[0, 1\), got -0\.1$"),
    (["objective=least_squares", "data=diabetes", "data.sampling=shuffle"],
     r"^data\.sampling: expected one of epoch, replacement, got 'shuffle'$"),
    (["objective=logistic", "data=moons", "objective.l2=0"],
     r"^objective\.l2: expected a number > 0, got 0$"),
    (["objective=mlp", "data=moons", "+data.degree=3"],
     r"^data\.degree: unknown key; it is a key of data chebyshev \(allowed in data 'moons': "
     r"batch_size, batches, eval_every, n_samples, name, noise, sampling, seed, standardize, "
     r"test_fraction\)$"),
    (["objective=mlp", "data=moons", "data.batches=own"],
     r"^data\.batches: expected one of shared, per_start, got 'own'$"),
    (["init=model"], r"^init\.name: expected fixed, grid, normal or uniform for objective "
                     r"'quadratic' \(model is for learning objectives\), got 'model'$"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_learning_config_gets_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.build(compose_config(*overrides))


def test_cli_error_is_one_line_and_writes_nothing(outputs):
    from .conftest import run_cli

    proc = run_cli("run", "objective=mlp", "data=chebyshev", "data.batch_size=21",
                   outputs=outputs)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "gdexp: error: data.batch_size: expected null or an integer in [1, 20] "
        "(the training samples), got 21")
    assert not (outputs / "mlflow.db").exists()


def test_config_builds_sgd_plan():
    plan = config.build(compose_config("objective=mlp", "data=moons", "init=model",
                                       "init.n_starts=4", "data.batch_size=32", "seed=3"))
    assert plan.x0.shape == (plan.objective.dim, 4)
    assert plan.run_kwargs["batch_size"] == 32 and plan.run_kwargs["batch_seed"] == 3
    assert plan.run_kwargs["sampling"] == "epoch" and plan.run_kwargs["batches"] == "shared"
    again = config.build(compose_config("objective=mlp", "data=moons", "init=model",
                                        "init.n_starts=4", "seed=3"))
    np.testing.assert_array_equal(plan.x0, again.x0)


@pytest.mark.slow
@pytest.mark.parametrize("batches", ["shared", "per_start"])
def test_sgd_run_reproduces_bit_for_bit(outputs, batches):
    from .conftest import run_cli

    proc = run_cli("run", "objective=mlp", "data=moons", "init=model", "init.n_starts=3",
                   "data.batch_size=16", f"data.batches={batches}", "optimizer=momentum",
                   "optimizer.lr=0.05",
                   "stop.max_steps=60", "tracking.plots=false", outputs=outputs, check=True)
    run_id = next(line.split()[1] for line in proc.stdout.splitlines()
                  if line.startswith("run "))
    from mlflow import MlflowClient

    from .conftest import store_uri

    run = MlflowClient(store_uri(outputs)).get_run(run_id)
    (ds,) = run.inputs.dataset_inputs
    assert ds.dataset.name == "moons" and ds.dataset.digest == data.moons().digest
    assert run.data.params["data.batch_size"] == "16"
    assert run.data.params["data.batches"] == batches
    assert run.data.tags["dataset.n_train"] == "160"
    client = MlflowClient(store_uri(outputs))
    steps = {k: [m.step for m in client.get_metric_history(run_id, k)]
             for k in ("loss", "batch_loss", "test_loss", "accuracy", "test_accuracy")}
    assert steps["batch_loss"] == list(range(61))
    assert steps["loss"] == list(range(0, 60, 10)) + [60]  # once per epoch: 160 / 16
    assert steps["test_accuracy"] == steps["loss"]
    assert 0 <= run.data.metrics["final_test_accuracy"] <= 1
    again = run_cli("reproduce", run_id, "--check", outputs=outputs)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "bit-identical" in again.stdout
