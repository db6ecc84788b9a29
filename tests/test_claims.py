"""Published claims checked on finished runs: the config key, the logged rows, each preset's science."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gdexp import config

from .conftest import compose_config, run_cli, store_uri


def _only_run(outputs, experiment="gdexp"):
    client = MlflowClient(store_uri(outputs))
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, [r for r in runs if r.data.tags.get("gdexp.sweep") != "true"]


def test_claim_key_is_validated():
    assert config.build(compose_config()).claim is None
    with pytest.raises(config.ConfigError,
                       match=r"^claim: expected null or one of edge_of_stability, catapult, "
                             r"momentum_rates, saddle_avoidance, heavy_ball_cycle, got 'nope'$"):
        config.build(compose_config("claim=nope"))
    with pytest.raises(config.ConfigError,
                       match=r"^diagnostics.sharpness_every: expected an integer >= 1 for "
                             r"claim catapult, got 0$"):
        config.build(compose_config("objective=uv", "claim=catapult"))
    with pytest.raises(config.ConfigError,
                       match=r"^diagnostics.enabled: expected true for claim saddle_avoidance"):
        config.build(compose_config("claim=saddle_avoidance", "diagnostics.enabled=false"))


def test_a_bad_claim_is_one_line_and_exit_2(outputs):
    proc = run_cli("run", "claim=edge", outputs=outputs)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gdexp: error: claim: expected null or one of edge_of_stability, catapult, "
        "momentum_rates, saddle_avoidance, heavy_ball_cycle, got 'edge'"]
    assert not (outputs / "mlflow.db").exists() or not _only_run(outputs)[1]


def test_a_run_logs_its_claim_rows(outputs):
    """GD on f = ½x² with η = 1.5 (ηλ0 = 1.5 < 2): the catapult claim's lazy row, from the
    store: paper 1, measured max loss / initial loss = 1 (the loss falls from step 0)."""
    proc = run_cli("run", "objective=quadratic", "objective.eigenvalues=[1.0]", "init.x0=[1.0]",
                   "optimizer.lr=1.5", "diagnostics.sharpness_every=1", "stop.max_steps=200",
                   "claim=catapult", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "claim catapult: held (1/1 rows)" in proc.stdout
    _, runs = _only_run(outputs)
    m, tags = runs[0].data.metrics, runs[0].data.tags
    assert m["claim.x1.50.lazy.spike.paper"] == 1.0
    assert m["claim.x1.50.lazy.spike.measured"] == 1.0
    assert tags["claim.x1.50.lazy.spike.held"] == "true"
    assert tags["claim"] == "catapult" and tags["claim.held"] == "true"
    assert "Lewkowycz" in tags["claim.reference"]


@pytest.mark.slow
def test_edge_of_stability_preset_holds(outputs):
    """Cohen et al. 2021 from the preset's own command: for every rate the sharpness reaches
    2/η and over the last 30 % of the steps its median times η/2 lies in 0.85-1.15, checked
    from the stored sharpness curve, not from the claim's own numbers alone; the loss falls
    over that window and rises on some of its steps."""
    proc = run_cli("run", "experiment=edge_of_stability", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "claim edge_of_stability: held" in proc.stdout
    client, runs = _only_run(outputs, "edge_of_stability")
    (r,) = runs
    m, tags = r.data.metrics, r.data.tags
    art = client.download_artifacts(r.info.run_id, "", str(outputs / "dl"))
    d = np.load(f"{art}/diagnostics.npz")
    t = np.load(f"{art}/trace.npz")
    assert Path(art, "plots", "sharpness.png").stat().st_size > 0
    for j, lr in enumerate(t["base_lr"]):
        key = f"claim.lr{lr:g}"
        k, lam = d["sharpness_steps"], d["sharpness"][:, j]
        tail = np.median(lam[k >= 0.7 * t["steps_taken"][j]]) * lr / 2
        assert 0.85 <= tail <= 1.15
        assert m[f"{key}.edge.measured"] == pytest.approx(tail, rel=1e-12)
        assert m[f"{key}.edge.paper"] == 1.0 and tags[f"{key}.edge.held"] == "true"
        assert lam[0] * lr / 2 < 0.85  # it starts below the edge: the sharpness rose to it
        window = t["steps"] >= 0.7 * t["steps_taken"][j]
        loss = t["loss"][window, j]
        assert loss[-1] < loss[0] and np.any(np.diff(loss) > 0)
        assert tags[f"{key}.long_run.held"] == tags[f"{key}.nonmonotone.held"] == "true"
    assert tags["claim.held"] == "true"


def _uv_closed_form(x0: np.ndarray, lr: float, steps: int, width: int):
    """Lewkowycz et al.'s exact two-number recursion for GD on the uv model with target 0:
    with f = vᵀu/√m and λ = (‖u‖² + ‖v‖²)/m,
    f' = f(1 − ηλ + η²f²/m),  λ' = λ + ηf²(ηλ − 4)/m  (expand one GD step of u and v)."""
    u, v = x0[:width], x0[width:]
    f, lam = float(u @ v) / np.sqrt(width), float(u @ u + v @ v) / width
    fs, lams = [f], [lam]
    for _ in range(steps):
        f, lam = (f * (1 - lr * lam + lr * lr * f * f / width),
                  lam + lr * f * f * (lr * lam - 4) / width)
        fs.append(f)
        lams.append(lam)
        if not np.isfinite(f) or abs(f) > 1e150:
            break
    return np.array(fs), np.array(lams)


def test_catapult_preset_follows_the_closed_form_model(outputs):
    """The preset's run against the uv model's closed-form (f, λ) recursion, an independent
    solver: its loss curve is ½f_t² step by step; η·λ0 < 2 never rises, 2 < η·λ0 < 4 spikes
    then converges where λ < 2/η (the final sharpness equals the recursion's λ), and
    η·λ0 > 4 diverges; the stored claim rows say the same."""
    proc = run_cli("run", "experiment=catapult", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "claim catapult: held (6/6 rows)" in proc.stdout
    client, (r,) = _only_run(outputs, "catapult")
    m, tags = r.data.metrics, r.data.tags
    art = client.download_artifacts(r.info.run_id, "", str(outputs / "dl"))
    t, d = np.load(f"{art}/trace.npz"), np.load(f"{art}/diagnostics.npz")
    width = 1000
    phases = []
    for j, lr in enumerate(t["base_lr"]):
        x0 = t["x0"][:, j]
        taken = int(t["steps_taken"][j])
        fs, lams = _uv_closed_form(x0, lr, taken, width)
        lam0 = lams[0]
        loss = t["loss"][: taken + 1, j]
        ok = np.isfinite(loss) & (loss < 1e12)
        # rtol on the loss, and an atol for the last steps, where f ~ 1e-8 is a sum of 1000
        # products of size 1 and so carries rounding ~1e-15 (loss error ~1e-23)
        np.testing.assert_allclose(loss[ok], 0.5 * fs[: taken + 1][ok] ** 2, rtol=1e-7,
                                   atol=1e-20)
        key = f"claim.x{lr * d['sharpness'][0, j]:.2f}"
        if lr * lam0 < 2:
            phases.append("lazy")
            assert np.all(np.diff(loss) <= 0)
            assert m[f"{key}.lazy.spike.measured"] == 1.0
        elif lr * lam0 < 4:
            phases.append("catapult")
            assert loss.max() > 10 * loss[0]
            assert lams[-1] < 2 / lr
            final = m[f"{key}.catapult.final_ratio.measured"]
            assert final == pytest.approx(lr * lams[-1] / 2, rel=1e-6)
            assert final < 1 and tags[f"{key}.catapult.final_ratio.held"] == "true"
            assert m[f"{key}.catapult.spike.measured"] == pytest.approx(loss.max() / loss[0])
        else:
            phases.append("divergent")
            assert not np.isfinite(fs[-1]) or abs(fs[-1]) > 1e6
            assert tags[f"{key}.divergent.held"] == "true"
    assert phases == ["lazy", "catapult", "catapult", "divergent"]
    assert tags["claim.held"] == "true"


def _iteration_matrix(method: str, lr: float, beta: float, lam: float) -> np.ndarray:
    """One step on f = ½λx² as a linear map, PyTorch conventions: heavy ball on (x_k, x_{k-1})
    (x' = x − ηλx + β(x − x_prev)); Nesterov on (x_k, v_k) (v' = βv + λx, x' = x − η(λx + βv'));
    GD is heavy ball with β = 0."""
    if method == "nesterov":
        return np.array([[1 - lr * lam * (1 + beta), -lr * beta * beta], [lam, beta]])
    return np.array([[1 + beta - lr * lam, -beta], [1.0, 0.0]])


@pytest.mark.parametrize("method, overrides", [
    ("heavy_ball", []),
    ("gd", ["optimizer.lr=${gdexp_div:2,101}", "optimizer.momentum=0"]),
    ("nesterov", ["optimizer=nesterov", "optimizer.lr=0.01",
                  "optimizer.momentum=${gdexp_div:9,11}"]),
])
def test_momentum_rates_preset_matches_the_spectral_radius(outputs, method, overrides):
    """Polyak / Nesterov on κ = 100: the run's path equals the per-eigenvalue linear
    recursion (so the optimizer is the method the theory is about); that recursion's spectral
    radius, from numpy's eigenvalues, is the paper's rate; the stored measured rate is within
    2 % of it."""
    proc = run_cli("run", "experiment=momentum_rates", "tracking.plots=false", *overrides,
                   outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client, (r,) = _only_run(outputs, "momentum_rates")
    m, tags = r.data.metrics, r.data.tags
    lr = float(r.data.params["optimizer.lr"])
    beta = float(r.data.params["optimizer.momentum"])
    lams = (1.0, 100.0)
    radius = max(np.abs(np.linalg.eigvals(_iteration_matrix(method, lr, beta, lam))).max()
                 for lam in lams)
    assert m[f"claim.{method}.rate.paper"] == pytest.approx(radius, rel=1e-6)
    measured = m[f"claim.{method}.rate.measured"]
    assert abs(measured / radius - 1) <= 0.02
    assert tags[f"claim.{method}.rate.held"] == tags[f"claim.{method}.params_optimal.held"] \
        == tags["claim.held"] == "true"

    art = client.download_artifacts(r.info.run_id, "", str(outputs / "dl"))
    t = np.load(f"{art}/trace.npz")
    steps, path = t["path_steps"], t["path"][:, :, 0]
    for i, lam in enumerate(lams):
        a = _iteration_matrix(method, lr, beta, lam)
        state = np.array([1.0, 1.0 if method != "nesterov" else 0.0])
        xs = [state[0]]
        for _ in range(int(steps[-1])):
            state = a @ state
            xs.append(state[0])
        np.testing.assert_allclose(path[:, i], np.array(xs)[steps], rtol=0, atol=1e-12)


def test_saddle_avoidance_preset_random_starts_miss_the_saddle(outputs):
    """Lee et al. 2016 on ¼x⁴ − ½x² + ½y²: the random starts all end at (±1, 0), where the
    analytic Hessian diag(3x² − 1, 1) is positive definite; a start on x = 0 follows
    y_k = y_0(1 − η)^k exactly and ends at the saddle, Hessian diag(−1, 1)."""
    proc = run_cli("run", "experiment=saddle_avoidance", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("run", "experiment=saddle_avoidance", "init=fixed", "init.x0=[0.0,1.5]",
                   "init.n_starts=1", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "at no listed minimum, a saddle point by its Hessian" in proc.stdout, proc.stdout
    client, runs = _only_run(outputs, "saddle_avoidance")
    by_rows = {("random" if "claim.random.at_saddle.held" in r.data.tags else "manifold"): r
               for r in runs}
    rnd, on = by_rows["random"], by_rows["manifold"]
    art = client.download_artifacts(rnd.info.run_id, "", str(outputs / "a"))
    t = np.load(f"{art}/trace.npz")
    assert np.all(t["x0"][0] != 0)
    x, y = t["x"]
    np.testing.assert_allclose(np.abs(x), 1.0, atol=1e-6)
    np.testing.assert_allclose(y, 0.0, atol=1e-6)
    assert np.all(3 * x ** 2 - 1 > 0)
    assert rnd.data.metrics["claim.random.at_saddle.measured"] == 0.0
    assert rnd.data.tags["claim.held"] == "true"

    art = client.download_artifacts(on.info.run_id, "", str(outputs / "b"))
    t = np.load(f"{art}/trace.npz")
    k = t["path_steps"]
    np.testing.assert_allclose(t["path"][:, 1, 0], 1.5 * (1 - 0.05) ** k, rtol=1e-12)
    assert np.all(t["path"][:, 0, 0] == 0.0)
    assert on.data.metrics["claim.manifold.at_saddle.measured"] == 1.0
    assert on.data.tags["claim.held"] == "true"


def _lessard_grad(x: float) -> float:
    """f' of Lessard-Recht-Packard's function, from their paper's three pieces."""
    return 25 * x if x < 1 else (x + 24 if x < 2 else 25 * x - 24)


def test_heavy_ball_cycle_preset_cycles_while_gd_converges(outputs):
    """Lessard et al. 2016, §4.6: heavy ball (α = 1/9, β = 4/9) from 3.3 follows the plain
    recursion x' = x − αf'(x) + β(x − x_prev) (x_prev = x0) and ends on the paper's 3-cycle
    (−1.8024, 2.1159, 0.6465); GD at 1/(2L) converges to 0."""
    proc = run_cli("run", "experiment=heavy_ball_cycle", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("run", "experiment=heavy_ball_cycle", "optimizer.momentum=0",
                   "optimizer.lr=0.02", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client, runs = _only_run(outputs, "heavy_ball_cycle")
    hb = next(r for r in runs if r.data.params["optimizer.momentum"] != "0")
    gd_run = next(r for r in runs if r.data.params["optimizer.momentum"] == "0")
    art = client.download_artifacts(hb.info.run_id, "", str(outputs / "a"))
    t = np.load(f"{art}/trace.npz")
    path = t["path"][:, 0, 0]
    xs, prev, x = [3.3], 3.3, 3.3
    for _ in range(int(t["path_steps"][-1])):
        prev, x = x, x - _lessard_grad(x) / 9 + 4 / 9 * (x - prev)
        xs.append(x)
    np.testing.assert_allclose(path, np.array(xs)[t["path_steps"]], rtol=0, atol=1e-9)
    assert sorted(np.round(path[-3:], 4)) == [-1.8024, 0.6465, 2.1159]
    m, tags = hb.data.metrics, hb.data.tags
    assert m["claim.heavy_ball.period.measured"] == 3.0 == m["claim.heavy_ball.period.paper"]
    assert m["claim.heavy_ball.distance.measured"] == pytest.approx(0.6465, abs=1e-4)
    assert tags["claim.held"] == "true"
    assert gd_run.data.metrics["claim.gd.distance.measured"] <= 1e-6
    assert gd_run.data.tags["claim.held"] == "true"


def test_a_sweeps_jobs_keep_one_line_with_their_claim(outputs):
    proc = run_cli("run", "-m", "experiment=heavy_ball_cycle", "init.x0=[3.1],[3.3]",
                   "stop.max_steps=300", "tracking.plots=false", outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = [line for line in proc.stdout.splitlines() if line.startswith("job ")]
    assert len(jobs) == 2
    assert all("(claim heavy_ball_cycle: held (2/2 rows))" in line for line in jobs)
    assert not any(line.lstrip().startswith(("ok ", "NO ", "claim ")) for line in
                   proc.stdout.splitlines())
    _, runs = _only_run(outputs, "heavy_ball_cycle")
    assert sorted(r.data.tags["claim.held"] for r in runs) == ["true", "true"]


def test_report_shows_claims_and_sharpness_figures(outputs, tmp_path):
    """gdexp report: the claim rows next to each other (paper, measured, held) in the text and
    in runs.md, and each run's sharpness figure when it kept its plots."""
    common = ["objective=quadratic", "objective.eigenvalues=[1.0]", "init.x0=[1.0]",
              "diagnostics.sharpness_every=1", "stop.max_steps=50", "claim=catapult"]
    for extra in (["optimizer.lr=1.5"], ["optimizer.lr=0.5", "tracking.plots=false"]):
        proc = run_cli("run", *common, *extra, outputs=outputs)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("report", "gdexp", "--out", str(tmp_path / "rep"), outputs=outputs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines)
                if line.startswith("run ") and "claim row" in line)
    assert lines[head].split() == ["run", "claim", "row", "paper", "measured", "held", "statement"]
    rows = [line.split()[:5] for line in lines[head + 2: head + 4]]
    assert sorted(r[1:] for r in rows) == [["x0.50.lazy.spike", "1", "1", "true"],
                                           ["x1.50.lazy.spike", "1", "1", "true"]]
    md = (tmp_path / "rep" / "runs.md").read_text()
    assert "## Claims" in md and "| x1.50.lazy.spike | 1 | 1 | true |" in md
    figs = sorted(p.name for p in (tmp_path / "rep").glob("sharpness-*.png"))
    assert figs == ["sharpness-quadratic-gd-lr1.5-s0.png"]
