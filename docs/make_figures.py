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

# preset -> [(source, figure name)]; a source is "report:<file>" from `gdexp report <experiment>`
# or "run:<run name>:<file>" from that run's plots/ artifacts.
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
    "lr_scan": [("run:quadratic-gd-lr0.001-0.3x24-s0-n24:outcome_vs_lr.png", "lr_scan.png")],
    "basins_atlas": [("run:himmelblau-gd-lr0.01-s0-n1600:atlas.png", "atlas_himmelblau.png"),
                     ("run:multi_well-gd-lr0.01-s0-n1600:atlas.png", "atlas_multi_well.png")],
    "optimizer_zoo": [("report:loss_curves-*-rosenbrock.png", "zoo_rosenbrock.png"),
                      ("report:loss_curves-*-quadratic.png", "zoo_quadratic.png")],
}


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
            runs = {r.info.run_name: r.info.run_id for r in client.search_runs([exp.experiment_id])}
            for src, name in wanted:
                kind, *rest = src.split(":")
                if kind == "report":
                    path = next(report_dir.glob(rest[0]))
                else:
                    path = Path(client.download_artifacts(runs[rest[0]], f"plots/{rest[1]}", tmp))
                shutil.copy(path, FIGURES / name)
                print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
