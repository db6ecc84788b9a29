"""Every config option and preset composes and builds; bad input gets the exact message."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from gdexp import config
from gdexp.config import CONF_DIR, EXPERIMENTS_DIR, ConfigError

from .conftest import compose_config

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
PRESETS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def test_every_group_has_options():
    assert {"objective", "init", "optimizer", "schedule", "stop", "tracking"} <= set(GROUPS)


# Options that need a partner: a learning objective needs data, data needs a learning
# objective, init=model needs a model.
PARTNERS = {("objective", "least_squares"): ["data=linear"],
            ("objective", "logistic"): ["data=moons"], ("objective", "mlp"): ["data=chebyshev"],
            ("init", "model"): ["objective=mlp", "data=chebyshev"]}
PARTNERS.update({("data", name): ["objective=mlp"] for name in
                 ("linear", "moons", "chebyshev", "diabetes", "breast_cancer", "iris",
                  "digits", "wine")})


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option):
    cfg = compose_config(f"{group}={option}", "init.n_starts=1",
                         *PARTNERS.get((group, option), []))
    plan = config.build(cfg)
    assert plan.x0.shape[0] == plan.objective.dim
    assert np.all(np.isfinite(plan.x0)) and np.all(plan.lr > 0)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds(preset):
    cfg = compose_config(f"experiment={preset}")
    plan = config.build(cfg)
    assert plan.n >= 1


def test_learning_rate_list_becomes_an_axis_of_the_batch():
    cfg = compose_config("init=uniform", "init.n_starts=3", "optimizer.lr=[0.01,0.1]")
    plan = config.build(cfg)
    assert plan.n == 6
    np.testing.assert_array_equal(plan.lr, [0.01] * 3 + [0.1] * 3)
    np.testing.assert_array_equal(plan.x0[:, :3], plan.x0[:, 3:])


def test_inits_are_seeded_and_shaped():
    a = config.build(compose_config("init=uniform", "init.n_starts=7", "seed=3")).x0
    b = config.build(compose_config("init=uniform", "init.n_starts=7", "seed=3")).x0
    c = config.build(compose_config("init=uniform", "init.n_starts=7", "seed=4")).x0
    assert a.shape == (2, 7) and np.array_equal(a, b) and not np.array_equal(a, c)
    g = config.build(compose_config("init=grid", "init.k=4")).x0
    assert g.shape == (2, 16)
    lo, hi = config.build_objective(compose_config()).plot_window
    np.testing.assert_allclose(g.min(axis=1), lo)
    np.testing.assert_allclose(g.max(axis=1), hi)
    n = config.build(compose_config("init=normal", "init.n_starts=4000", "init.std=0.5",
                                    "init.mean=[1.0,-2.0]")).x0
    np.testing.assert_allclose(n.mean(axis=1), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(n.std(axis=1), [0.5, 0.5], atol=0.05)
    u = config.build(compose_config("init=uniform", "init.n_starts=500", "init.low=-1",
                                    "init.high=[1,2]")).x0
    assert u.min() >= -1 and u[0].max() <= 1 and u[1].max() <= 2 and u[1].max() > 1


BAD = [
    (["optimizer.lr=abc"], r"^optimizer\.lr: expected a number > 0, got 'abc'$"),
    (["optimizer.lr=0"], r"^optimizer\.lr: expected a number > 0, got 0$"),
    (["optimizer.lr=-0.1"], r"^optimizer\.lr: expected a number > 0, got -0\.1$"),
    (["optimizer.lr=[0.1,-1]"], r"^optimizer\.lr: expected numbers > 0, got \[0\.1, -1\.0\]$"),
    (["stop.grad_tol=-1e-3"], r"^stop\.grad_tol: expected a number >= 0, got -0\.001$"),
    (["stop.max_steps=-5"], r"^stop\.max_steps: expected an integer >= 0, got -5$"),
    (["stop.max_steps=2.5"], r"^stop\.max_steps: expected an integer >= 0, got 2\.5$"),
    (["init.x0=[1,2,3]"],
     r"^init\.x0: has length 3 but objective\.dim is 2 \(got \[1, 2, 3\]\)$"),
    (["init.x0=[nan,1]"], r"^init\.x0: expected finite numbers, got \[nan, 1\]$"),
    (["init.x0=[a,1]"], r"^init\.x0: expected a list of numbers, got \['a', 1\]$"),
    (["init.n_starts=0"], r"^init\.n_starts: expected an integer >= 1, got 0$"),
    (["+objective.foo=1"], r"^objective\.foo: unknown key \(allowed in objective 'quadratic': "
                           r"center, condition, dim, eigenvalues, name, rotate, "
                           r"rotation_seed\)$"),
    (["+optimizer.momentum=0.9"], r"^optimizer\.momentum: unknown key; it is a key of optimizer "
                                  r"momentum, nesterov, rmsprop \(allowed in optimizer 'gd': "
                                  r"lr, name\)$"),
    (["seed=-1"], r"^seed: expected an integer >= 0, got -1$"),
    (["basin_tol=0"], r"^basin_tol: expected a number > 0, got 0$"),
    (["init=normal", "init.std=0"], r"^init\.std: expected numbers > 0, got \[0\.0\]$"),
    (["line_search=armijo", "line_search.shrink=1.5"],
     r"^line_search: expected c and shrink in \(0, 1\), got c=0\.0001, shrink=1\.5$"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_values_name_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.build(compose_config(*overrides))


def test_tracking_values_are_checked():
    with pytest.raises(ConfigError, match=r"^tracking\.max_curve_points: expected an integer "
                                          r">= 2, got 1$"):
        config.check_tracking(compose_config("tracking.max_curve_points=1"))
    with pytest.raises(ConfigError, match=r"^tracking\.plots: expected true or false, got 'yes'$"):
        config.check_tracking(compose_config("tracking.plots=yes"))


def test_sweep_metric_is_checked():
    assert config.sweep_metric(compose_config("sweep_metric=steps")) == "steps"
    with pytest.raises(ConfigError, match=r"^sweep_metric: expected one of final_loss, steps, "
                                          r"got 'foo'$"):
        config.sweep_metric(compose_config("sweep_metric=foo"))


def test_unknown_option_and_unknown_key_are_refused_by_hydra():
    with pytest.raises(MissingConfigException, match="objective/rosenbruck"):
        compose_config("objective=rosenbruck")
    with pytest.raises(ConfigCompositionException, match="stop.max_step"):
        compose_config("stop.max_step=3")


def test_unknown_preset_lists_the_available_ones(outputs):
    from .conftest import run_cli

    proc = run_cli("run", "experiment=no_such_preset", outputs=outputs)
    assert proc.returncode == 2
    assert proc.stderr == (f"gdexp: error: experiment: expected one of {', '.join(PRESETS)}, "
                           "got 'no_such_preset'\n")
    assert not (outputs / "mlflow.db").exists()


def test_core_does_not_import_the_edges():
    code = ("import sys, gdexp, gdexp.objectives, gdexp.inits, gdexp.optimizers, gdexp.checks, "
            "gdexp.schedules, gdexp.descent, gdexp.sampling, gdexp.sharpness\n"
            "gdexp.objectives.OBJECTIVES['mlp']()\n"
            "import importlib.util\n"
            "if importlib.util.find_spec('gdexp.diagnostics'): import gdexp.diagnostics\n"
            "bad = [m for m in ('mlflow', 'hydra', 'omegaconf', 'matplotlib', 'sklearn', 'scipy')\n"
            "       if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
