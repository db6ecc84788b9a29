"""P3 and P4: what gdexp's tracking of one run costs, against naive fluent logging and as runs grow."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from common import (compose, goal, interleave, paired_ratio, prepare_store, say, sqlite_uri,
                    summary, wall)

EXPERIMENT = "bench"
BASE = ["objective=rosenbrock", "optimizer.lr=0.0005", "init.x0=[-1.2,1.0]", "stop.grad_tol=0",
        "diagnostics.enabled=false", "tracking.plots=false", f"tracking.experiment={EXPERIMENT}"]

# Descent results by max_steps, shared by P3 and P4: the descent is not what is measured.
_results: dict = {}


@contextlib.contextmanager
def frozen_descent():
    """Inside: pipeline.execute reuses one descent result per step budget and one git lookup.

    Both sides of every ratio run with the same patches, so what remains in the difference
    "tracking on − tracking off" is the tracking alone.
    """
    from gdexp import pipeline

    original_descend, original_code = pipeline._descend, pipeline.code_version
    code = original_code()

    def descend(plan, *extra):
        key = (plan.run_kwargs["max_steps"], plan.x0.tobytes(), plan.lr.tobytes())
        if key not in _results:
            say(f"  computing the {plan.run_kwargs['max_steps']}-step descent once (untimed)")
            _results[key] = original_descend(plan, *extra)
        return _results[key]

    pipeline._descend, pipeline.code_version = descend, lambda: dict(code)
    try:
        yield
    finally:
        pipeline._descend, pipeline.code_version = original_descend, original_code


class Sides:
    """`pipeline.execute` of one config with tracking on (into ``uri``) and off."""

    def __init__(self, tmp: Path, uri: str, steps: int, cap: int, tag: str):
        from gdexp import pipeline

        self.overrides = BASE + [f"stop.max_steps={steps}", f"tracking.max_curve_points={cap}"]
        self.cfg_on = compose(self.overrides + [f"tracking.uri={uri}"])
        self.cfg_off = compose(self.overrides + ["tracking.enabled=false"])
        self.dir_on, self.dir_off = tmp / f"{tag}-on", tmp / f"{tag}-off"
        self._execute = pipeline.execute
        self.last = None

    def on(self):
        self.last = self._execute(self.cfg_on, self.dir_on, self.overrides, out=io.StringIO())
        return self.last

    def off(self):
        return self._execute(self.cfg_off, self.dir_off, self.overrides, out=io.StringIO())


def logged_content(uri: str, run_id: str, artifacts: Path) -> dict:
    """What gdexp stored for a run, read back: params, own tags, metric histories, files."""
    from gdexp import tracking

    client = tracking.client(uri)
    run = client.get_run(run_id)
    histories = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
                 for key in run.data.metrics}
    files = sorted(p for p in artifacts.iterdir() if p.is_file())
    stored = {a.path for a in client.list_artifacts(run_id)}
    assert stored == {p.name for p in files}, (stored, files)
    return {"name": run.info.run_name, "params": dict(run.data.params),
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            "metrics": histories, "files": files}


def naive_logger(uri: str, content: dict):
    """The same content through the fluent API, one call per param, tag, point and file."""
    import mlflow

    experiment_id = prepare_store(uri, EXPERIMENT)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id)

    def log_naively():
        mlflow.start_run(run_name=content["name"])
        for key, value in content["params"].items():
            mlflow.log_param(key, value)
        for key, value in content["tags"].items():
            mlflow.set_tag(key, value)
        for key, points in content["metrics"].items():
            for step, value in points:
                mlflow.log_metric(key, value, step=step)
        for path in content["files"]:
            mlflow.log_artifact(str(path))
        mlflow.end_run()

    return log_naively


def p3_tracking_vs_naive(tmp: Path, rounds: int, steps: int = 1000, cap: int = 1000) -> dict:
    say(f"P3: gdexp tracking of a {steps}-step run vs naive fluent logging, {rounds} rounds")
    uri_g, uri_n = sqlite_uri(tmp / "p3-gdexp"), sqlite_uri(tmp / "p3-naive")
    prepare_store(uri_g, EXPERIMENT)
    with frozen_descent():
        sides = Sides(tmp, uri_g, steps, cap, "p3")
        sides.off()
        outcome = sides.on()  # warm-up, and the run whose content the naive side repeats
        content = logged_content(uri_g, outcome.run_id, sides.dir_on / "artifacts")
        points = sum(len(v) for v in content["metrics"].values())
        say(f"  content: {len(content['params'])} params, {len(content['tags'])} tags, "
            f"{len(content['metrics'])} metrics with {points} points, "
            f"{len(content['files'])} files")
        naive = naive_logger(uri_n, content)
        samples = interleave({"on": wall(sides.on), "off": wall(sides.off),
                              "naive": wall(naive)}, rounds, "P3")
    cost = [a - b for a, b in zip(samples["on"], samples["off"])]
    stats = paired_ratio(cost, samples["naive"])
    return goal("P3", "gdexp tracking of one run / naive fluent logging", stats["ratio"],
                1 / 3, "<=", details={
                    "steps": steps, "max_curve_points": cap, "rounds": rounds,
                    "clock": "wall", "metric_points": points,
                    "params": len(content["params"]), "tags": len(content["tags"]),
                    "files": [p.name for p in content["files"]],
                    "seconds": {"tracking_on": summary(samples["on"]),
                                "tracking_off": summary(samples["off"]),
                                "gdexp_tracking_cost": summary(cost),
                                "naive": summary(samples["naive"])},
                    **stats})


def p4_tracking_growth(tmp: Path, rounds: int, long_steps: int = 100_000,
                       short_steps: int = 1000, cap: int = 1000) -> dict:
    say(f"P4: tracking cost of a {long_steps}-step run vs a {short_steps}-step run, "
        f"{rounds} rounds")
    uri = sqlite_uri(tmp / "p4-gdexp")
    prepare_store(uri, EXPERIMENT)
    with frozen_descent():
        short = Sides(tmp, uri, short_steps, cap, "p4-short")
        long = Sides(tmp, uri, long_steps, cap, "p4-long")
        for side in (short.off, short.on, long.off, long.on):  # warm-up (and the descents)
            side()
        trace_bytes = {s: (d.dir_on / "artifacts" / "trace.npz").stat().st_size
                       for s, d in (("short", short), ("long", long))}
        samples = interleave({"long_on": wall(long.on), "long_off": wall(long.off),
                              "short_on": wall(short.on), "short_off": wall(short.off)},
                             rounds, "P4")
    long_cost = [a - b for a, b in zip(samples["long_on"], samples["long_off"])]
    short_cost = [a - b for a, b in zip(samples["short_on"], samples["short_off"])]
    stats = paired_ratio(long_cost, short_cost)
    return goal("P4", f"tracking cost of a {long_steps:,}-step run / a {short_steps:,}-step run",
                stats["ratio"], 2.0, "<=", details={
                    "rounds": rounds, "max_curve_points": cap, "clock": "wall",
                    "trace_npz_bytes": trace_bytes,
                    "seconds": {k: summary(v) for k, v in samples.items()}
                    | {"long_cost": summary(long_cost), "short_cost": summary(short_cost)},
                    **stats})
