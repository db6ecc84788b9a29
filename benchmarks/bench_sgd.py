"""R2 (information): an SGD learning-rate sweep as one descent. 100 mini-batch jobs (least
squares on the bundled diabetes data, batch 32, one batch sequence), one learning rate each,
as the batched launcher descends them (``batch.descend_together``), against the same jobs
descended one by one (10 of them, scaled to 100). Also reported: the same 100 jobs with 100
seeds (a row of batch indices per job) in one descent. Run alone:
python benchmarks/bench_sgd.py [--quick]."""
from __future__ import annotations

import sys

import numpy as np

from common import compose, cpu, goal, goal_line, interleave, paired_ratio, say


def r2_sgd_sweep(steps: int, rounds: int, jobs: int = 100, lone: int = 10) -> dict:
    from gdexp import batch, config, descent

    base = ["objective=least_squares", "data=diabetes", "data.batch_size=32",
            "data.test_fraction=0", f"stop.max_steps={steps}", "stop.grad_tol=0",
            "tracking=off"]
    # rates up to 1/L: none diverges, so every job makes ``steps`` updates
    lrs = [round(float(v), 6) for v in np.linspace(0.002, 0.24, jobs)]
    plans = [config.build(compose(base + [f"optimizer.lr={lr!r}"])) for lr in lrs]
    seeded = [config.build(compose(base + [f"optimizer.lr={lr!r}", f"seed={j}"]))
              for j, lr in enumerate(lrs)]
    say(f"R2: {jobs} SGD jobs (batch 32) in one descent vs one by one ({lone} of them, "
        f"scaled), {steps} steps")

    def together():
        return batch.descend_together(plans)

    def seeds():
        return batch.descend_together(seeded)

    def one_by_one():
        return [descent.run(p.objective, p.x0, p.optimizer, p.lr, schedule=p.schedule,
                            line_search=p.line_search, **p.run_kwargs)
                for p in plans[::jobs // lone]]

    # the sides compute the same trajectories: a job of the shared descent is its lone run
    shared, alone = together(), one_by_one()
    for j, r in zip(range(0, jobs, jobs // lone), alone):
        assert int(r.steps[0]) == steps and np.array_equal(shared[j].x, r.x), j
    s = interleave({"together": cpu(together), "seeds": cpu(seeds),
                    "one_by_one": cpu(one_by_one)}, rounds, "R2")
    return goal("R2", f"{jobs} SGD jobs in one descent / the same jobs one by one "
                      "(information)",
                paired_ratio(s["together"], s["one_by_one"], scale=lone / jobs)["ratio"],
                float("inf"), "<=",
                details={"steps": steps, "rounds": rounds, "clock": "process CPU",
                         "seconds": {k: min(v) for k, v in s.items()},
                         "seeds_over_together": paired_ratio(s["seeds"],
                                                             s["together"])["ratio"]})


def main() -> int:
    quick = "--quick" in sys.argv
    row = r2_sgd_sweep(300 if quick else 1000, 3 if quick else 5)
    print(goal_line(row, f"(best seconds {row['details']['seconds']}; one_by_one is "
                         f"10 of the 100 jobs; 100 seeds / one seed in one descent: "
                         f"{row['details']['seeds_over_together']:.2f})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
