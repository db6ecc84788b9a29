"""Every preset in experiments/ runs end to end with small budgets and logs what it promises."""
from __future__ import annotations

import math

import pytest
import yaml
from mlflow.tracking import MlflowClient

from gdexp.config import EXPERIMENTS_DIR

from .conftest import run_cli, store_uri

PRESETS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
# lr_search needs the optuna sweeper and many trials; it has its own test.
SMALL = [p for p in PRESETS if p != "lr_search"]


def expected_runs(preset: str) -> int:
    spec = yaml.safe_load((EXPERIMENTS_DIR / f"{preset}.yaml").read_text())
    params = spec.get("hydra", {}).get("sweeper", {}).get("params", {})
    return math.prod(len(str(v).split(",")) for v in params.values()) if params else 1


@pytest.mark.slow
@pytest.mark.parametrize("preset", SMALL)
def test_preset_runs_with_small_budget(preset, outputs):
    proc = run_cli("run", f"experiment={preset}", "stop.max_steps=30", "tracking.plots=false",
                   outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec = yaml.safe_load((EXPERIMENTS_DIR / f"{preset}.yaml").read_text())
    client = MlflowClient(store_uri(outputs))
    exp = client.get_experiment_by_name(spec["tracking"]["experiment"])
    runs = client.search_runs([exp.experiment_id])
    jobs = [r for r in runs if r.data.tags.get("gdexp.sweep") != "true"]
    assert len(jobs) == expected_runs(preset)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.params["stop.max_steps"] == "30" for r in jobs)
    if expected_runs(preset) > 1:
        assert len(runs) == len(jobs) + 1  # the sweep run


def test_lr_regimes_shows_the_four_regimes(outputs):
    """The source texts' claim: too small is slow, near 2/(λmax+λmin) is fast, just under
    2/λmax oscillates but converges, above 2/λmax diverges."""
    proc = run_cli("run", "experiment=lr_regimes", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(store_uri(outputs))
    exp = client.get_experiment_by_name("lr_regimes")
    jobs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("gdexp.sweep") != "true"]
    by_lr = {float(r.data.params["optimizer.lr"]): r for r in jobs}
    small, best, edge, over = (by_lr[k] for k in sorted(by_lr))
    assert over.data.tags["status"] == "diverged"
    for r in (small, best, edge):
        assert r.data.tags["status"] == "converged" and r.data.tags["basin"] == "global"
    assert best.data.metrics["steps"] < edge.data.metrics["steps"] < small.data.metrics["steps"]
    # the stable bound logged by the diagnostics: 2/L with L = λmax = 10
    assert best.data.metrics["stable_lr_x0"] == pytest.approx(0.2)
    assert over.data.metrics["lr_L_x0"] > 2 > edge.data.metrics["lr_L_x0"]
    # just under 2/λmax the steep coordinate flips sign every step: oscillation
    loss = [m.value for m in client.get_metric_history(edge.info.run_id, "taylor_ratio")]
    assert loss and min(loss) < 0.1


def test_presets_are_a_config_group_served_by_gdexp_s_hydra_plugin():
    """experiments/ reaches Hydra through a config source and a search path plugin that
    Hydra's own plugin discovery finds: nothing registers the presets beforehand."""
    from hydra.core.object_type import ObjectType
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin
    from hydra_plugins.gdexp_launcher.presets import PresetsConfigSource, PresetsSearchPath

    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(SearchPathPlugin)}
    assert f"{PresetsSearchPath.__module__}.PresetsSearchPath" in found
    source = PresetsConfigSource("gdexp", f"gdexp-presets://{EXPERIMENTS_DIR}")
    names = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    assert source.list("experiment", ObjectType.CONFIG) == names
    assert source.list("", ObjectType.GROUP) == ["experiment"]
    assert source.is_group("experiment") and not source.is_group("objective")
    assert source.is_config("experiment/lr_regimes")
    assert not source.is_config("objective/quadratic") and not source.is_config("lr_regimes")
    loaded = source.load_config("experiment/lr_regimes")
    assert loaded.header["package"] == "_global_"
    assert loaded.config == yaml.safe_load((EXPERIMENTS_DIR / "lr_regimes.yaml").read_text())


def test_a_preset_composes_without_registration():
    from .conftest import compose_config

    cfg = compose_config("experiment=momentum_rates")
    assert cfg.optimizer.name == "momentum" and cfg.claim == "momentum_rates"
