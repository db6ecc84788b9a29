"""Schedules against closed forms written out here, warm-up, argument errors, configs."""
import glob
import inspect
import math
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from gdexp.descent import run
from gdexp.objectives import quadratic
from gdexp.optimizers import gd
from gdexp.schedules import SCHEDULES, constant, cosine, exponential, inverse_time, step

CONF = os.path.join(os.path.dirname(__file__), os.pardir, "conf")


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-14, abs_tol=1e-300)


def test_constant():
    s = constant()
    assert [s(k) for k in (0, 1, 7, 10**6)] == [1.0] * 4


def test_step():
    s = step(step_size=10, gamma=0.5)
    expected = {0: 1.0, 1: 1.0, 9: 1.0, 10: 0.5, 19: 0.5, 20: 0.25, 25: 0.25, 30: 0.125}
    for k, v in expected.items():
        assert close(s(k), v), k
    s = step(3)  # default gamma 0.1
    assert close(s(2), 1.0) and close(s(3), 0.1) and close(s(6), 0.01) and close(s(9), 1e-3)


def test_exponential():
    s = exponential(0.9)
    assert close(s(0), 1.0)
    assert close(s(1), 0.9)
    assert close(s(3), 0.729)
    assert close(s(50), 0.9 ** 50)
    assert exponential(1.0)(1000) == 1.0


def test_inverse_time():
    s = inverse_time(0.5)
    assert close(s(0), 1.0)
    assert close(s(1), 2.0 / 3.0)
    assert close(s(4), 1.0 / 3.0)
    assert close(s(98), 1.0 / 50.0)
    assert inverse_time(0.0)(12345) == 1.0


def test_cosine():
    s = cosine(100, min_factor=0.1)
    assert close(s(0), 1.0)
    assert close(s(25), 0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2)
    assert close(s(50), 0.55)
    assert close(s(75), 0.1 + 0.9 * (1 - math.sqrt(0.5)) / 2)
    assert close(s(99), 0.1 + 0.9 * (1 + math.cos(math.pi * 0.99)) / 2)
    assert s(100) == 0.1 and s(101) == 0.1 and s(10**6) == 0.1  # held after the decay
    s = cosine(4)  # default min_factor 0
    assert [round(s(k), 15) for k in range(6)] == [1.0, round((1 + math.sqrt(0.5)) / 2, 15),
                                                   0.5, round((1 - math.sqrt(0.5)) / 2, 15),
                                                   0.0, 0.0]


def test_decay_schedules_are_non_increasing_and_in_0_1():
    for s in (step(7, 0.3), exponential(0.97), inverse_time(0.2), cosine(50, 0.2), constant()):
        v = np.array([s(k) for k in range(200)])
        assert np.all(np.diff(v) <= 0) and v[0] == 1.0 and np.all(v > 0) and np.all(v <= 1)


@pytest.mark.parametrize("factory, kw", [
    (constant, {}), (step, dict(step_size=3, gamma=0.5)), (exponential, dict(gamma=0.8)),
    (inverse_time, dict(decay_rate=0.3)), (cosine, dict(decay_steps=10, min_factor=0.2)),
])
def test_warmup(factory, kw):
    plain = factory(**kw)
    zero = factory(**kw, warmup_steps=0)
    assert all(zero(k) == plain(k) for k in range(30))  # warmup_steps=0 changes nothing
    w = 4
    warmed = factory(**kw, warmup_steps=w)
    # (k + 1)/(W + 1) of the schedule's own value on steps 0 … W−1, untouched from W on
    for k in range(w):
        assert close(warmed(k), plain(k) * (k + 1) / (w + 1)), k
    for k in range(w, 30):
        assert warmed(k) == plain(k), k
    assert warmed(0) > 0


def test_warmup_values_of_constant():
    s = constant(warmup_steps=3)
    assert [s(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_returns_plain_floats_and_accepts_numpy_steps():
    for s in (constant(warmup_steps=2), step(2), exponential(0.5), inverse_time(1.0),
              cosine(10, warmup_steps=3)):
        for k in (0, 1, 5, 20):
            assert isinstance(s(k), float)
            assert s(np.int64(k)) == s(k)


ERRORS = [
    (step, dict(step_size=0), r"step_size must be an integer >= 1, got 0"),
    (step, dict(step_size=2.5), r"step_size must be an integer >= 1, got 2\.5"),
    (step, dict(step_size=True), r"step_size must be an integer >= 1, got True"),
    (step, dict(step_size=5, gamma=0.0), r"gamma must be in \(0, 1\], got 0\.0"),
    (step, dict(step_size=5, gamma=1.5), r"gamma must be in \(0, 1\], got 1\.5"),
    (exponential, dict(gamma=-0.5), r"gamma must be in \(0, 1\], got -0\.5"),
    (exponential, dict(gamma=float("nan")), r"gamma must be in \(0, 1\], got nan"),
    (inverse_time, dict(decay_rate=-1.0), r"decay_rate must be in \[0, inf\), got -1\.0"),
    (inverse_time, dict(decay_rate="0.1"), r"decay_rate must be in \[0, inf\), got '0\.1'"),
    (cosine, dict(decay_steps=0), r"decay_steps must be an integer >= 1, got 0"),
    (cosine, dict(decay_steps=10, min_factor=1.5), r"min_factor must be in \[0, 1\], got 1\.5"),
    (cosine, dict(decay_steps=10, min_factor=-0.1), r"min_factor must be in \[0, 1\], got -0\.1"),
    (constant, dict(warmup_steps=-1), r"warmup_steps must be an integer >= 0, got -1"),
    (cosine, dict(decay_steps=10, warmup_steps=1.5), r"warmup_steps must be an integer >= 0, got 1\.5"),
]


@pytest.mark.parametrize("factory, kw, match", ERRORS,
                         ids=[f"{f.__name__}-{'-'.join(kw)}" for f, kw, _ in ERRORS])
def test_argument_errors(factory, kw, match):
    with pytest.raises(ValueError, match=match):
        factory(**kw)


def test_runner_uses_base_lr_times_schedule():
    sched = cosine(20, min_factor=0.25, warmup_steps=3)
    result = run(quadratic(eigenvalues=[1.0, 10.0]), np.array([[1.0, -2.0], [1.0, 0.5]]), gd(),
                 [0.1, 0.05], max_steps=25, schedule=sched)
    assert result.trace.full_resolution
    for row, k in enumerate(result.trace.steps[:-1]):
        np.testing.assert_allclose(result.trace.lr[row], np.array([0.1, 0.05]) * sched(int(k)),
                                   rtol=1e-15)


def test_registry_and_yaml_configs_match_factories():
    files = sorted(glob.glob(os.path.join(CONF, "schedule", "*.yaml")))
    assert {os.path.basename(p)[:-5] for p in files} == set(SCHEDULES)
    for path in files:
        raw = OmegaConf.load(path)
        root = OmegaConf.create({"stop": {"max_steps": 321}, "schedule": raw})
        cfg = OmegaConf.to_container(root, resolve=True)["schedule"]
        name = cfg.pop("name")
        assert name == os.path.basename(path)[:-5]
        params = inspect.signature(SCHEDULES[name]).parameters
        assert set(cfg) == set(params), path
        for k, p in params.items():  # the keys with a default in the factory keep it
            if p.default is not inspect.Parameter.empty:
                assert cfg[k] == p.default, (path, k)
        s = SCHEDULES[name](**cfg)
        assert s(0) == 1.0
    raw = OmegaConf.load(os.path.join(CONF, "schedule", "cosine.yaml"))
    assert OmegaConf.to_container(raw, resolve=False)["decay_steps"] == "${stop.max_steps}"
