"""S1: the cost of the sharpness curve every 10 steps on the edge-of-stability preset, against
the same descent without it. Run alone: python benchmarks/bench_sharpness.py [--quick]."""
from __future__ import annotations

import sys

import numpy as np

from common import compose, cpu, goal, goal_line, interleave, paired_ratio, say


def s1_sharpness_cost(steps: int, rounds: int, every: int = 10) -> dict:
    from gdexp import config, descent
    from gdexp.sharpness import SharpnessMonitor

    plan = config.build(compose(["experiment=edge_of_stability", f"stop.max_steps={steps}"]))
    say(f"S1: edge_of_stability ({plan.n} rates, {plan.objective.dim} parameters), {steps} "
        f"steps, sharpness every {every} vs none, {rounds} rounds")
    monitors = []

    def descend(monitor=None):
        return descent.run(plan.objective, plan.x0, plan.optimizer, plan.lr, callback=monitor,
                           **plan.run_kwargs)

    def with_curve():
        m = SharpnessMonitor(plan.objective, every, tol=plan.diagnostics["sharpness_tol"])
        monitors.append(m)
        return descend(m)

    # the monitor only watches: the descent is the same with and without it
    assert np.array_equal(with_curve().x, descend().x)
    s = interleave({"with": cpu(with_curve), "without": cpu(descend)}, rounds, "S1")
    st = paired_ratio(s["with"], s["without"])
    products = float(np.mean(np.concatenate([np.ravel(p) for p in monitors[-1].products])))
    return goal("S1", f"edge_of_stability with the sharpness every {every} steps / without",
                st["ratio"], 1.30, "<=",
                details={"steps": steps, "every": every, "hvp_per_evaluation": products, **st})


def main() -> int:
    quick = "--quick" in sys.argv
    r = s1_sharpness_cost(500 if quick else 3000, 3 if quick else 5)
    print(goal_line(r, f"HVPs per evaluation {r['details']['hvp_per_evaluation']:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
