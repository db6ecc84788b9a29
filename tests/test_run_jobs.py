"""Several jobs in one descent: each job's Result equals its lone run, field for field, bit for bit."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gdexp.descent import Armijo, Result, Trace, run, run_jobs
from gdexp.objectives import OBJECTIVES
from gdexp.optimizers import OPTIMIZERS, stacked
from gdexp.schedules import SCHEDULES


def assert_same(a: Result, b: Result) -> None:
    for field in dataclasses.fields(Result):
        va, vb = getattr(a, field.name), getattr(b, field.name)
        if isinstance(va, Trace):
            for tf in dataclasses.fields(Trace):
                ta, tb = getattr(va, tf.name), getattr(vb, tf.name)
                if isinstance(ta, dict):
                    assert ta.keys() == tb.keys(), tf.name
                    pairs = [(ta[k], tb[k]) for k in ta]
                elif ta is None:
                    assert tb is None, tf.name
                    pairs = []
                else:
                    pairs = [(ta, tb)]
                for x, y in pairs:
                    assert x.shape == y.shape, (tf.name, x.shape, y.shape)
                    assert np.array_equal(x, y, equal_nan=True), tf.name
        elif isinstance(va, np.ndarray):
            assert va.shape == vb.shape, field.name
            assert np.array_equal(va, vb, equal_nan=True), field.name
        else:
            assert va == vb, field.name


def lone_and_batched(objective, jobs, optimizer, **kw):
    x0s, lrs = [j[0] for j in jobs], [j[1] for j in jobs]
    together = run_jobs(objective, x0s, optimizer, lrs, **kw)
    alone = []
    for j, (x0, lr) in enumerate(jobs):
        own = {k: (v[j] if isinstance(v, list) else v) for k, v in kw.items()}
        alone.append(run(objective, x0, optimizer, lr, **own))
    return together, alone


def test_rosenbrock_lr_sweep_with_early_stops_divergence_and_thinning():
    rosen = OBJECTIVES["rosenbrock"]()
    far, near = np.array([-1.2, 1.0]), np.array([1.1, 1.2])
    # rates that converge early, hit the budget, and diverge (at different steps)
    jobs = [(near, 1e-3), (far, 1e-4), (near, 1.9e-3), (far, 1.9e-3), (near, 4e-4),
            (far, 0.01), (near, 0.05)]
    # a small trace budget makes the recorders thin while some jobs have stopped and others run
    together, alone = lone_and_batched(rosen, jobs, OPTIMIZERS["gd"](), max_steps=3000,
                                       grad_tol=1e-3, diverge_above=1e6, trace_budget=300,
                                       path_budget=500)
    outcomes = {r.status[0].outcome for r in alone}
    assert outcomes == {"converged", "max_steps", "diverged"}, outcomes
    assert len({int(r.steps[0]) for r in alone}) >= 4  # the jobs stop at different steps
    assert any(not r.trace.full_resolution for r in alone)  # thinning happened
    for a, b in zip(together, alone):
        assert_same(a, b)


@pytest.mark.parametrize("opt", ["momentum", "adam", "rmsprop", "nesterov", "adagrad"])
def test_multi_start_jobs_of_different_sizes_with_a_schedule(opt):
    obj = OBJECTIVES["himmelblau"]()
    rng = np.random.default_rng(1)
    # jobs of 1, 3 and 5 starts: three recorder capacities; one job with a learning-rate axis
    jobs = [(rng.uniform(-4, 4, (2, 1)), 0.01), (rng.uniform(-4, 4, (2, 3)), 0.003),
            (rng.uniform(-4, 4, (2, 5)), np.array([0.001, 0.002, 0.004, 0.008, 0.3])),
            (rng.uniform(-4, 4, (2, 3)), 0.02)]
    together, alone = lone_and_batched(
        obj, jobs, OPTIMIZERS[opt](), max_steps=800, grad_tol=1e-5, step_tol=1e-9,
        schedule=SCHEDULES["cosine"](decay_steps=500), trace_budget=[400, 300, 1000, 50],
        path_budget=[80, 2000, 300, 40], basin_tol=[1e-2, 1e-3, 1e-2, 0.5])
    for a, b in zip(together, alone):
        assert_same(a, b)


def test_line_search_and_value_tol_on_a_rotated_quadratic():
    obj = OBJECTIVES["quadratic"](dim=6, eigenvalues=[1, 2, 5, 10, 30, 100], rotate=True)
    rng = np.random.default_rng(7)
    jobs = [(rng.normal(size=(6, m)), lr) for m, lr in ((1, 0.5), (4, 0.02), (2, 1.0), (1, 0.01))]
    together, alone = lone_and_batched(obj, jobs, OPTIMIZERS["gd"](), max_steps=400,
                                       value_tol=1e-10, line_search=Armijo(max_iter=20))
    for a, b in zip(together, alone):
        assert_same(a, b)
    assert len({int(r.steps.max()) for r in alone}) > 1


@pytest.mark.parametrize("line_search", [None, Armijo(max_iter=20)], ids=["rate", "armijo"])
def test_jobs_with_their_own_optimizers_descend_together(line_search):
    """``optimizers.stacked``: each block of columns updated by its own rule and constants
    (a momentum sweep, GD beside Adam) gives each job exactly its lone run."""
    obj = OBJECTIVES["quadratic"](dim=4, eigenvalues=[1, 3, 10, 40], rotate=True)
    rng = np.random.default_rng(3)
    shared = rng.normal(size=(4, 2))
    jobs = [(shared, 0.01, OPTIMIZERS["momentum"](momentum=0.5)),
            (shared[:, :1], 0.01, OPTIMIZERS["momentum"](momentum=0.9)),
            (rng.normal(size=(4, 3)), np.array([0.001, 0.01, 0.04]), OPTIMIZERS["gd"]()),
            (rng.normal(size=(4, 1)), 0.05, OPTIMIZERS["adam"](beta1=0.8, amsgrad=True)),
            (rng.normal(size=(4, 2)), 0.02, OPTIMIZERS["nesterov"](momentum=0.7,
                                                                   weight_decay=0.1))]
    kw = dict(max_steps=300, grad_tol=1e-6, diverge_above=1e8, schedule=SCHEDULES["cosine"](
        decay_steps=200), line_search=line_search)
    stack = stacked([(opt, np.shape(x0)[1]) for x0, _, opt in jobs])
    together = run_jobs(obj, [j[0] for j in jobs], stack, [j[1] for j in jobs], **kw)
    alone = [run(obj, x0, opt, lr, **kw) for x0, lr, opt in jobs]
    for a, b in zip(together, alone):
        assert_same(a, b)
    # the rules differ in earnest: the same start under two momenta parts ways
    assert np.array_equal(alone[0].x0[:, :1], alone[1].x0)
    assert np.abs(alone[0].trace.path[:, :, 0] - alone[1].trace.path[:, :, 0]).max() > 1e-3


def test_a_job_that_stops_at_step_zero():
    obj = OBJECTIVES["quadratic"]()
    jobs = [(np.zeros(2), 0.1), (np.array([1.0, 1.0]), 0.1)]
    together, alone = lone_and_batched(obj, jobs, OPTIMIZERS["gd"](), max_steps=50,
                                       grad_tol=1e-8)
    assert alone[0].steps[0] == 0 and alone[0].trace.steps.tolist() == [0]
    for a, b in zip(together, alone):
        assert_same(a, b)


def test_held_out_evaluations_of_a_learning_problem_are_each_job_s_own():
    from gdexp import config

    from .conftest import compose_config

    plan = config.build(compose_config("objective=least_squares", "data=diabetes",
                                       "tracking.enabled=false"))
    obj = plan.objective
    assert obj.evaluate is not None  # a held-out split: test_loss recorded per job
    rng = np.random.default_rng(3)
    L = obj.constants["L"]
    # converges early, runs to the budget, diverges, and a two-start job with a rate axis
    jobs = [(np.zeros(obj.dim), 1.0 / L), (rng.normal(size=(obj.dim, 1)), 0.1 / L),
            (rng.normal(size=(obj.dim, 1)), 2.5 / L),
            (rng.normal(size=(obj.dim, 2)), np.array([0.5 / L, 1.5 / L]))]
    together, alone = lone_and_batched(obj, jobs, OPTIMIZERS["gd"](), max_steps=700,
                                       grad_tol=3e-3, diverge_above=1e8, evaluate=obj.evaluate,
                                       eval_every=7, trace_budget=[200, 60, 200, 100])
    outcomes = {o for r in alone for o in r.outcomes}
    assert outcomes == {"converged", "max_steps", "diverged"}, outcomes
    for a, b in zip(together, alone):
        assert set(b.trace.evals) >= {"test_loss"}
        assert b.trace.eval_steps[-1] == b.steps.max()  # closed at the job's own last step
        assert_same(a, b)


@pytest.mark.parametrize("sampling", ["epoch", "replacement"])
def test_mini_batch_jobs_each_evaluate_on_their_own_steps(sampling):
    """SGD jobs in one descent, each on its own batches: a job evaluates the full batch at the
    common evaluation steps and where one of its own starts' batch loss blows up, never
    because another job's did, so each stops, records and closes its held-out curve as it
    would alone."""
    from gdexp import config

    from .conftest import compose_config

    plan = config.build(compose_config("objective=least_squares", "data=diabetes",
                                       "tracking.enabled=false"))
    obj = plan.objective
    rng = np.random.default_rng(5)
    L = obj.constants["L"]
    # a rate whose batch loss overflows between the evaluation steps; a job whose second
    # start does so, after which that job evaluates every step and its first start meets
    # value_tol; two that run to the budget, as they must, whatever the others do
    # value_tol; two that run to the budget, as they must, whatever the others do; jobs of
    # other seeds (other batches) and one whose two starts each draw their own
    jobs = [(rng.normal(size=(obj.dim, 1)), 50 / L), (np.zeros(obj.dim), 0.5 / L),
            (rng.normal(size=(obj.dim, 1)), 0.05 / L),
            (rng.normal(size=(obj.dim, 2)), np.array([0.3 / L, 75 / L])),
            (np.zeros(obj.dim), 0.5 / L), (rng.normal(size=(obj.dim, 2)), 0.5 / L)]
    together, alone = lone_and_batched(obj, jobs, OPTIMIZERS["momentum"](momentum=0.5),
                                       max_steps=600, value_tol=1e-3, diverge_above=1e8,
                                       batch_size=16, sampling=sampling,
                                       batch_seed=[4, 4, 4, 4, 9, 4],
                                       batches=["shared"] * 5 + ["per_start"],
                                       eval_every=100, evaluate=obj.evaluate,
                                       trace_budget=[150, 400, 90, 400, 400, 400])
    assert [r.outcomes for r in alone][:4] == [("diverged",), ("max_steps",), ("max_steps",),
                                               ("converged", "diverged")]
    # another seed, other batches: not job 1's trajectory from the same start and rate
    assert not np.array_equal(alone[4].x, alone[1].x)
    # off the evaluation steps: on batch losses of the job's own starts
    assert all(int(r.steps.max()) % 100 for r in (alone[0], alone[3]))
    for a, b in zip(together, alone):
        assert b.trace.batch_loss is not None and set(b.trace.evals) >= {"test_loss"}
        assert_same(a, b)
