"""Where a sweep's wall time goes: run one instrumented `gdexp run -m` and print time per phase."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import gdexp_command, prepare_store, run_timed, say, sqlite_uri  # noqa: E402
from bench_sweep import EXPERIMENT, sweep_overrides  # noqa: E402

LAUNCHERS = {"basic": ["hydra/launcher=basic"],
             "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             "batched": ["hydra/launcher=batched"]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python benchmarks/breakdown.py",
        description="Run one sweep with timers around Hydra, gdexp and MLflow phases and print "
                    "where its wall time goes.")
    parser.add_argument("--jobs", type=int, default=20, help="jobs in the sweep (default 20)")
    parser.add_argument("--steps", type=int, default=1000, help="steps per job (default 1000)")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="basic")
    parser.add_argument("--json", type=Path, default=None, help="also write the totals here")
    parser.add_argument("--keep", action="store_true", help="keep the sweep's output folder")
    parser.add_argument("overrides", nargs="*",
                        help="extra overrides for every job, e.g. tracking.max_curve_points=200")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.steps < 1:
        parser.error(f"--jobs and --steps: expected integers >= 1, got {args.jobs}, {args.steps}")
    return args


def collect(prefix: Path) -> list[dict]:
    processes = []
    for path in sorted(prefix.parent.glob(prefix.name + ".*.json")):
        processes.append(json.loads(path.read_text()))
    return processes


def render(processes: list[dict], wall: float, jobs: int) -> tuple[str, dict]:
    """One table: each label's total over processes, calls, ms per call, share of the wall time."""
    launcher = [p for p in processes if "cli_main" in p["marks"]]
    workers = [p for p in processes if "cli_main" not in p["marks"]
               and p["totals"].get("job: hydra run_job")]
    totals: dict[str, list] = {}
    for p in launcher + workers:
        for label, (seconds, calls, longest, cpu_seconds) in p["totals"].items():
            row = totals.setdefault(label, [0.0, 0, 0.0, 0.0])
            row[0] += seconds
            row[1] += calls
            row[2] = max(row[2], longest)
            row[3] += cpu_seconds
    lines = [f"sweep wall time: {wall:.2f} s for {jobs} jobs ({wall / jobs * 1000:.0f} ms per job)"]
    summary = {"wall": wall, "jobs": jobs, "processes": len(launcher) + len(workers)}
    for p in launcher:
        start = p["marks"]["cli_main"]
        lines.append(f"launcher process: interpreter start -> gdexp.cli.main {start:.2f} s "
                     "(imports of gdexp.cli, numpy, autograd)")
        summary["startup_to_cli_main"] = start
        main_total = p["totals"].get("gdexp.cli.main", [0.0])[0]
        after = p["alive"] - start - main_total
        lines.append(f"launcher process: gdexp.cli.main returned -> last atexit handler "
                     f"{after:.2f} s; then interpreter shutdown {wall - p['alive']:.2f} s")
        summary["after_cli_main"] = after
        summary["shutdown"] = wall - p["alive"]
    for i, p in enumerate(workers):
        lines.append(f"worker {i + 1}: interpreter start -> first job "
                     f"{p['marks'].get('first_job_worker', float('nan')):.2f} s, "
                     f"{p['totals']['job: hydra run_job'][1]} jobs")
    cpu_total = sum(p.get("cpu", 0.0) for p in launcher + workers)
    lines.append(f"CPU of these processes: {cpu_total:.2f} s "
                 f"({cpu_total / wall:.2f} cores busy on average)")
    summary["cpu"] = cpu_total
    lines.append("")
    lines.append(f"{'phase (nested phases are included in their parents)':58} {'total s':>8} "
                 f"{'cpu s':>7} {'calls':>6} {'ms/call':>8} {'% wall':>7}")
    order = sorted(totals, key=lambda k: (k.split(":")[0], -totals[k][0]))
    for label in order:
        seconds, calls, _, cpu_seconds = totals[label]
        lines.append(f"{label[:58]:58} {seconds:8.2f} {cpu_seconds:7.2f} {calls:6d} "
                     f"{seconds / calls * 1000:8.1f} {100 * seconds / wall:6.1f}%")
    summary["totals"] = {k: {"seconds": v[0], "calls": v[1], "longest": v[2], "cpu": v[3]}
                         for k, v in totals.items()}
    return "\n".join(lines), summary


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gdexp-breakdown-"))
    out = tmp / "outputs"
    out.mkdir()
    uri = sqlite_uri(out)
    prepare_store(uri, EXPERIMENT)
    base, lrs = sweep_overrides(args.jobs, args.steps)
    cmd = gdexp_command() + ["run", "-m", *base, *args.overrides,
                             "optimizer.lr=" + ",".join(repr(v) for v in lrs),
                             *LAUNCHERS[args.launcher]]
    prefix = tmp / "timers"
    env = {**os.environ, "GDEXP_OUTPUTS": str(out), "GDEXP_BREAKDOWN": str(prefix),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "instrument"),
                                                      os.environ.get("PYTHONPATH")]))}
    say(f"instrumented {args.launcher} sweep: {args.jobs} jobs x {args.steps} steps")
    t0 = time.perf_counter()
    run_timed(cmd, env=env, cwd=tmp, log=tmp / "sweep.log")
    wall = time.perf_counter() - t0
    text, summary = render(collect(prefix), wall, args.jobs)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.keep:
        say(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
