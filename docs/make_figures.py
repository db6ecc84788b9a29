"""Regenerate the README's figures: run each preset, report it, copy one figure per claim.

    python docs/make_figures.py [PRESET ...]   (a few minutes; writes docs/figures/*.png)

Runs go to a temporary outputs folder, so the project's own store is left alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "figures"

# preset -> [(source, figure name)]; a source is "report:<file>" from `gdexp report <experiment>`,
# "run:<run name>:<file>" from that run's plots/ artifacts, or "custom:<function>", a figure
# drawn below from the experiment's logged metric histories.
WANTED = {
    "lr_regimes": [("report:paths.png", "lr_regimes_paths.png"),
                   ("report:loss_curves.png", "lr_regimes_curves.png")],
    "taylor_step": [("report:taylor_ratio.png", "taylor_step_ratio.png")],
    "basins": [("run:himmelblau-gd-lr0.01-s0-n16:contour.png", "basins_himmelblau.png"),
               ("run:multi_well-gd-lr0.01-s0-n16:contour.png", "basins_multi_well.png")],
    "convex_vs_nonconvex": [("run:quadratic-gd-lr0.05-s0-n200:atlas.png", "convex_atlas.png"),
                            ("run:multi_well-gd-lr0.05-s0-n200:atlas.png", "nonconvex_atlas.png")],
    "rosenbrock_valley": [("report:paths.png", "rosenbrock_valley_paths.png"),
                          ("report:loss_curves.png", "rosenbrock_valley_curves.png")],
    "lr_scan": [("run:quadratic-gd-lr0.001-0.3x24-s0-n24:outcome_vs_lr.png", "lr_scan.png"),
                ("run:quadratic-gd-lr0.001-0.3x24-s0-n24:contour.png", "lr_scan_paths.png")],
    "basins_atlas": [("run:himmelblau-gd-lr0.01-s0-n1600:atlas.png", "atlas_himmelblau.png"),
                     ("run:multi_well-gd-lr0.01-s0-n1600:atlas.png", "atlas_multi_well.png")],
    "optimizer_zoo": [("report:loss_curves-*-rosenbrock.png", "zoo_rosenbrock.png"),
                      ("report:loss_curves-*-quadratic.png", "zoo_quadratic.png")],
    "sgd_noise": [("custom:sgd_noise_gaps", "sgd_noise.png")],
    "edge_of_stability": [("run:mlp-chebyshev-gd-lr0.1-0.3x3-s0-n3:sharpness.png",
                           "edge_of_stability.png")],
    "catapult": [("run:uv-gd-lr0.75-2.25x4-s0-n4:sharpness.png", "catapult.png")],
    "batch_size": [("custom:batch_size_points", "batch_size.png")],
    "logistic_real": [("custom:logistic_real_loss", "logistic_real_loss.png"),
                      ("custom:logistic_real_test_loss", "logistic_real_test_loss.png"),
                      ("custom:logistic_real_accuracy", "logistic_real_accuracy.png")],
    "mlp_moons": [("run:mlp-moons-gd-lr0.5-s0-n100:spread.png", "mlp_moons_spread.png"),
                  ("run:mlp-moons-gd-lr0.5-s0-n100:learning.png", "mlp_moons_learning.png")],
}


def _history(client, run, key):
    import numpy as np

    h = client.get_metric_history(run.info.run_id, key)
    return np.array([m.step for m in h]), np.array([m.value for m in h])


def sgd_noise_gaps(client, runs, path):
    """f − f* of every run on one log plot, labelled by batch size, rate and schedule."""
    from gdexp import plots

    series = {}
    for run in sorted(runs, key=lambda r: (r.data.params["schedule.name"],
                                           r.data.params["data.batch_size"],
                                           float(r.data.params["optimizer.lr"]))):
        p = run.data.params
        steps, loss = _history(client, run, "loss")
        batch = "full" if p["data.batch_size"] in ("None", "null") else p["data.batch_size"]
        label = f"b={batch} lr={p['optimizer.lr']} {p['schedule.name']}"
        series[label] = (steps, loss - run.data.metrics["f_star"])
    return plots.metric_lines(series, path, "f − f*  (full training loss)",
                              title="sgd_noise: least squares, SGD vs GD")


def batch_size_points(client, runs, path):
    """Final f − f* against batch size at 20 epochs, lr = 0.01 · batch size."""
    from gdexp import plots

    x = [int(r.data.params["data.batch_size"]) for r in runs]
    diverged = [r.data.tags.get("status") == "diverged" for r in runs]
    y = [float("nan") if d else r.data.metrics["final_loss"] - r.data.metrics["f_star"]
         for r, d in zip(runs, diverged)]
    return plots.points(x, y, ["lr = 0.01 · batch size, 20 epochs"] * len(x), path,
                        "batch size", "final f − f*", diverged=diverged,
                        title="batch_size: the linear scaling rule")


def _by_optimizer(runs):
    return sorted(runs, key=lambda r: ["gd", "momentum", "adam"].index(r.data.params["optimizer.name"]))


def logistic_real_loss(client, runs, path):
    from gdexp import plots

    series = {}
    for run in _by_optimizer(runs):
        name = run.data.params["optimizer.name"]
        f_star = run.data.metrics["f_star"]
        steps, loss = _history(client, run, "loss")
        series[f"{name} train f − f*"] = (steps, loss - f_star)
    return plots.metric_lines(series, path, "training loss − f*  (f* from Newton)",
                              title="logistic_real: breast_cancer, l2 = 0.01")


def logistic_real_test_loss(client, runs, path):
    """Held-out loss, not minus f*: it may end below the training minimum."""
    from gdexp import plots

    series = {run.data.params["optimizer.name"]: _history(client, run, "test_loss")
              for run in _by_optimizer(runs)}
    return plots.metric_lines(series, path, "test loss", logy=False,
                              title="logistic_real: held-out loss")


def logistic_real_accuracy(client, runs, path):
    from gdexp import plots

    series = {}
    for run in _by_optimizer(runs):
        name = run.data.params["optimizer.name"]
        series[f"{name} train accuracy"] = _history(client, run, "accuracy")
        series[f"{name} test accuracy"] = _history(client, run, "test_accuracy")
    return plots.metric_lines(series, path, "accuracy", logy=False,
                              title="logistic_real: accuracy")


def gdexp(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "gdexp", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> int:
    FIGURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        env = {**os.environ, "GDEXP_OUTPUTS": str(out)}
        from mlflow.tracking import MlflowClient

        chosen = sys.argv[1:] or list(WANTED)
        for preset, wanted in ((p, WANTED[p]) for p in chosen):
            print(f"{preset} ...", flush=True)
            gdexp("run", f"experiment={preset}", env=env)
            report_dir = out / "reports" / preset
            if any(src.startswith("report:") for src, _ in wanted):
                gdexp("report", preset, "--out", str(report_dir), env=env)
            client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
            exp = client.get_experiment_by_name(preset)
            found = [r for r in client.search_runs([exp.experiment_id])
                     if r.data.tags.get("gdexp.sweep") != "true"]
            runs = {r.info.run_name: r.info.run_id for r in found}
            for src, name in wanted:
                kind, *rest = src.split(":")
                if kind == "custom":
                    path = globals()[rest[0]](client, found, Path(tmp) / name)
                elif kind == "report":
                    path = next(report_dir.glob(rest[0]))
                else:
                    path = Path(client.download_artifacts(runs[rest[0]], f"plots/{rest[1]}", tmp))
                shutil.copy(path, FIGURES / name)
                print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
