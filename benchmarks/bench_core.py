"""P1 and P2: the runner's per-step cost against a bare autograd loop, and the batching gain."""
from __future__ import annotations

import numpy as np

from common import bare_gd, cpu, goal, interleave, paired_ratio, say, summary

X0 = np.array([-1.2, 1.0])  # the classic Rosenbrock start
LR = 5e-4                   # stable along the whole path (curvature stays below 2/LR = 4000)


def _rosenbrock():
    from gdexp import OBJECTIVES, OPTIMIZERS

    return OBJECTIVES["rosenbrock"](dim=2), OPTIMIZERS["gd"]()


def p1_runner_overhead(steps: int, rounds: int) -> dict:
    """descent.run on one start vs `x -= lr·g` with autograd's value_and_grad, same steps."""
    from gdexp import descent

    objective, optimizer = _rosenbrock()
    say(f"P1: runner vs bare value_and_grad loop, 2-D Rosenbrock, plain GD, {steps} steps, "
        f"{rounds} rounds")

    bare = bare_gd(objective.f, X0, LR, steps)

    def runner():
        # No tolerance can fire: grad_tol/step_tol/value_tol default to 0 and the
        # divergence bound to +inf, so exactly `steps` updates are made.
        return descent.run(objective, X0, optimizer, LR, max_steps=steps)

    # Same work on both sides: the same final point, and all steps taken.
    result = runner()
    assert result.steps[0] == steps and result.status[0].rule == "max_steps", result.status
    assert np.allclose(result.x[:, 0], bare(), rtol=0, atol=1e-12), "sides disagree"

    samples = interleave({"runner": cpu(runner), "bare": cpu(bare)}, rounds, "P1")
    stats = paired_ratio(samples["runner"], samples["bare"])
    per_step = {k: summary([s / steps * 1e6 for s in v]) for k, v in samples.items()}
    return goal("P1", "runner cost per step / bare value_and_grad loop (n=1)", stats["ratio"],
                1.10, "<=", details={"steps": steps, "rounds": rounds, "clock": "process CPU",
                                     "us_per_step": per_step, **stats})


def p2_batching(steps: int, rounds: int, n: int = 1000) -> dict:
    """descent.run with n starts vs one start: cost per trajectory-step."""
    from gdexp import descent

    objective, optimizer = _rosenbrock()
    rng = np.random.default_rng(0)
    # Starts in a box where LR is stable and none of them diverges or converges early.
    box = rng.uniform([-1.2, -0.5], [1.2, 1.5], size=(n, 2)).T
    say(f"P2: batched n={n} vs n=1, {steps} steps, {rounds} rounds")

    def batched():
        return descent.run(objective, box, optimizer, LR, max_steps=steps)

    def single():
        return descent.run(objective, X0, optimizer, LR, max_steps=steps)

    check = batched()
    assert all(s.rule == "max_steps" for s in check.status), "a start stopped early"

    samples = interleave({"n1000": cpu(batched), "n1": cpu(single)}, rounds, "P2")
    stats = paired_ratio(samples["n1000"], samples["n1"], scale=1.0 / n)
    per_traj_step = {"n1000": summary([s / (steps * n) * 1e6 for s in samples["n1000"]]),
                     "n1": summary([s / steps * 1e6 for s in samples["n1"]])}
    return goal("P2", f"batched n={n}: cost per trajectory-step / n=1", stats["ratio"],
                1 / 300, "<=", details={"steps": steps, "rounds": rounds, "n": n,
                                        "clock": "process CPU",
                                        "us_per_trajectory_step": per_traj_step,
                                        "speedup_per_trajectory": 1 / stats["ratio"], **stats})
