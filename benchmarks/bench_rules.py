"""R1 (information): a sweep over an optimizer's constants as one descent. 100 jobs on 2-D
Rosenbrock, heavy ball with 100 momentum values, each job's columns updated by its own rule
(``optimizers.stacked``), against the same 100 jobs sharing one momentum, and against the 100
jobs descended one by one. Run alone: python benchmarks/bench_rules.py [--quick]."""
from __future__ import annotations

import sys

import numpy as np

from common import cpu, goal, goal_line, interleave, paired_ratio, say

LR = 1e-4
X0 = np.array([-1.2, 1.0])


def r1_stacked_rules(steps: int, rounds: int, jobs: int = 100, lone: int = 10) -> dict:
    from gdexp.descent import run, run_jobs
    from gdexp.objectives import OBJECTIVES
    from gdexp.optimizers import OPTIMIZERS, stacked

    obj = OBJECTIVES["rosenbrock"]()
    momenta = np.linspace(0.0, 0.95, jobs)
    x0s, lrs = [X0] * jobs, [LR] * jobs
    say(f"R1: {jobs} jobs, {jobs} momentum values in one descent vs one value vs one by one "
        f"({lone} of them, scaled), {steps} steps")

    def one_rule():
        return run_jobs(obj, x0s, OPTIMIZERS["momentum"](momentum=0.9), lrs, max_steps=steps)

    def many_rules():
        rules = stacked([(OPTIMIZERS["momentum"](momentum=m), 1) for m in momenta])
        return run_jobs(obj, x0s, rules, lrs, max_steps=steps)

    def one_by_one():
        return [run(obj, X0, OPTIMIZERS["momentum"](momentum=m), LR, max_steps=steps)
                for m in momenta[::jobs // lone]]

    # the sides compute the same trajectories: a job of the stacked descent is its lone run
    together, alone = many_rules(), one_by_one()
    for j, r in zip(range(0, jobs, jobs // lone), alone):
        assert np.array_equal(together[j].x, r.x), j
    s = interleave({"one_rule": cpu(one_rule), "many_rules": cpu(many_rules),
                    "one_by_one": cpu(one_by_one)}, rounds, "R1")
    vs_lone = paired_ratio(s["many_rules"], s["one_by_one"], scale=lone / jobs)
    return goal("R1", f"{jobs} momentum values in one descent / one momentum value "
                      "(information)",
                paired_ratio(s["many_rules"], s["one_rule"])["ratio"], float("inf"), "<=",
                details={"steps": steps, "rounds": rounds, "clock": "process CPU",
                         "seconds": {k: min(v) for k, v in s.items()},
                         "many_rules_over_one_by_one": vs_lone["ratio"]})


def main() -> int:
    quick = "--quick" in sys.argv
    row = r1_stacked_rules(300 if quick else 1000, 3 if quick else 5)
    print(goal_line(row, f"(one by one: {1 / row['details']['many_rules_over_one_by_one']:.1f}x "
                         f"the stacked descent; best seconds {row['details']['seconds']})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
