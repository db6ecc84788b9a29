"""P5, P6, P8, P9: whole `gdexp run -m` sweeps against their bare descents and each other.

P5/P6 measure the per-job launchers (basic; joblib against basic), P8/P9 the batched launcher
(the default of `gdexp run -m`) against the bare descents and against the basic launcher."""
from __future__ import annotations

import os
import time
from pathlib import Path

from common import (compose, gdexp_command, goal, interleave, paired_ratio, prepare_store,
                    run_timed, say, sqlite_uri, summary)

EXPERIMENT = "bench"


def sweep_overrides(jobs: int, steps: int) -> tuple[list[str], list[float]]:
    """One job per learning rate in [1e-4, 1e-3): from Rosenbrock's fixed start (−1, 0) none
    diverges and none converges, so every job makes exactly ``steps`` updates."""
    lrs = [round(1e-4 + i * 9e-4 / jobs, 10) for i in range(jobs)]
    base = ["objective=rosenbrock", "stop.grad_tol=0", f"stop.max_steps={steps}",
            "diagnostics.enabled=false", "tracking.plots=false",
            f"tracking.experiment={EXPERIMENT}"]
    return base, lrs


class Sweep:
    """Launch the sweep as a user would, into a fresh outputs folder with a ready store."""

    def __init__(self, tmp: Path, jobs: int, steps: int, launcher_args: list[str], name: str):
        self.tmp, self.jobs, self.name = tmp, jobs, name
        base, lrs = sweep_overrides(jobs, steps)
        self.args = ["run", "-m", *base, "optimizer.lr=" + ",".join(repr(v) for v in lrs),
                     *launcher_args]
        self.count = 0
        self.cpu = []

    def __call__(self) -> float:
        self.count += 1
        out = self.tmp / f"{self.name}-{self.count}"
        out.mkdir(parents=True)
        uri = sqlite_uri(out)
        # A store that already exists, as for every sweep but a user's very first one: its
        # creation (schema migrations, ~1 s) is set-up, not sweep cost.
        prepare_store(uri, EXPERIMENT)
        env = {**os.environ, "GDEXP_OUTPUTS": str(out)}
        timing = run_timed(gdexp_command() + self.args, env=env, cwd=self.tmp,
                           log=out / "sweep.log")
        self.cpu.append(timing["cpu"])
        self._check(uri)
        return timing["wall"]

    def _check(self, uri: str) -> None:
        """Every job stored one FINISHED child run of one sweep run (untimed)."""
        from gdexp import tracking

        client = tracking.client(uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id], max_results=10_000)
        children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
        finished = [r for r in children if r.info.status == "FINISHED"]
        if len(finished) != self.jobs:
            raise RuntimeError(f"{self.name}: {len(finished)}/{self.jobs} jobs stored FINISHED "
                               f"runs in {uri}")


def bare_descents(jobs: int, steps: int):
    """descent.run alone for each job's config (plans built beforehand, untimed)."""
    from gdexp import config, descent

    base, lrs = sweep_overrides(jobs, steps)
    plans = [config.build(compose(base + [f"optimizer.lr={lr!r}"])) for lr in lrs]

    def run_all() -> float:
        total = 0.0
        for plan in plans:
            t0 = time.perf_counter()
            result = descent.run(plan.objective, plan.x0, plan.optimizer, plan.lr,
                                 schedule=plan.schedule, line_search=plan.line_search,
                                 **plan.run_kwargs)
            total += time.perf_counter() - t0
            assert int(result.steps[0]) == steps, (plan.lr, result.status)
        return total

    return run_all


def p5_p6_sweeps(tmp: Path, jobs: int, steps: int, rounds: int) -> list[dict]:
    say(f"P5/P6/P8/P9: {jobs}-job sweeps of {steps}-step runs (basic, joblib n_jobs=2, "
        f"batched) and the bare descents, {rounds} rounds")
    basic = Sweep(tmp, jobs, steps, ["hydra/launcher=basic"], "basic")
    joblib = Sweep(tmp, jobs, steps, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                   "joblib")
    batched = Sweep(tmp, jobs, steps, ["hydra/launcher=batched"], "batched")
    bare = bare_descents(jobs, steps)
    samples = interleave({"basic": basic, "joblib": joblib, "batched": batched, "bare": bare},
                         rounds, "P5/P6/P8/P9")
    p5 = paired_ratio(samples["basic"], samples["bare"])
    p6 = paired_ratio(samples["basic"], samples["joblib"])
    p8 = paired_ratio(samples["batched"], samples["bare"])
    p9 = paired_ratio(samples["batched"], samples["basic"])
    seconds = {k: summary(v) for k, v in samples.items()}
    common = {"jobs": jobs, "steps": steps, "rounds": rounds, "clock": "wall",
              "tracking": "on (sqlite, store created beforehand)", "plots": False,
              "diagnostics": False, "seconds": seconds,
              "sweep_cpu_seconds": {"basic": summary(basic.cpu), "joblib": summary(joblib.cpu),
                                    "batched": summary(batched.cpu)},
              "per_job_seconds": {"basic": seconds["basic"]["median"] / jobs,
                                  "batched": seconds["batched"]["median"] / jobs,
                                  "bare": seconds["bare"]["median"] / jobs}}
    return [
        goal("P5", f"{jobs}-job sweep wall time (basic launcher) / sum of bare descents",
             p5["ratio"], 2.0, "<=", details={**common, **p5}),
        goal("P6", "joblib n_jobs=2 speed-up over the basic launcher", p6["ratio"], 1.6, ">=",
             details={**common, **p6}),
        goal("P8", f"{jobs}-job sweep wall time (batched launcher) / sum of bare descents",
             p8["ratio"], 0.3, "<=", details={**common, **p8}),
        goal("P9", f"{jobs}-job sweep wall time, batched launcher / basic launcher",
             p9["ratio"], 0.2, "<=", details={**common, **p9}),
    ]
