"""Measure gdexp's speed goals P1–P7 as interleaved ratios; print a table and write JSON."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Sizes: (full, --quick). Rounds = how many interleaved repetitions of each side.
SIZES = {
    # Short samples, many rounds: the pair of one round sees the same machine load.
    "P1": ({"steps": 500, "rounds": 41}, {"steps": 500, "rounds": 15}),
    "P2": ({"steps": 500, "rounds": 15}, {"steps": 300, "rounds": 7}),
    # The naive side logs every curve point with its own call: ~25 ms each on sqlite.
    "P3": ({"rounds": 2, "cap": 1000}, {"rounds": 2, "cap": 200}),
    "P4": ({"long_steps": 100_000, "rounds": 5}, {"long_steps": 10_000, "rounds": 3}),
    "P5": ({"jobs": 100, "steps": 1000, "rounds": 3}, {"jobs": 10, "steps": 1000, "rounds": 2}),
    "P7": ({"rounds": 10}, {"rounds": 5}),
}
GOALS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Speed goals of gdexp, each measured as a ratio of two interleaved sides.")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and fewer rounds (about 2-3 minutes)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json",
                        help="where to write the JSON results (default: benchmarks/results.json)")
    parser.add_argument("--only", default=",".join(GOALS),
                        help="comma-separated goals to measure, e.g. P1,P3 (P5, P6, P8 and P9 share "
                             "one set of sweeps)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder with the stores and sweep outputs")
    args = parser.parse_args(argv)
    only = [g.strip().upper() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in only if g not in GOALS]
    if unknown:
        parser.error(f"--only: unknown goal {unknown[0]!r}; allowed: {', '.join(GOALS)}")
    args.only = only
    return args


def fmt_ratio(value: float, target: float = 1.0) -> str:
    """Ratios of goals whose target is a fraction (1/300) print as 1/N, the others as x.xx."""
    if value is None:
        return "-"
    return f"1/{1 / value:.0f}" if 0 < value and target < 0.5 else f"{value:.2f}"


def table(rows: list[dict]) -> str:
    lines = [f"{'goal':4}  {'what':64}  {'measured':>9}  {'target':>8}  result",
             "-" * 100]
    for row in rows:
        measured = fmt_ratio(row.get("ratio"), row["target"])
        target = f"{row['op']} {fmt_ratio(row['target'], row['target'])}"
        result = "ERROR" if row.get("error") else ("pass" if row["pass"] else "FAIL")
        lines.append(f"{row['id']:4}  {row['goal'][:64]:64}  {measured:>9}  {target:>8}  {result}")
    return "\n".join(lines)


def git_state() -> dict:
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True,
                                 text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except OSError:
            return None
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--", "gdexp", "conf"))}


def benchmarks(tmp: Path, quick: bool):
    """(goal ids, callable) in the order they run: cheap ones first."""
    import bench_core
    import bench_startup
    import bench_sweep
    import bench_tracking

    size = {k: v[1 if quick else 0] for k, v in SIZES.items()}
    return [
        (("P7",), lambda: [bench_startup.p7_startup(tmp, **size["P7"])]),
        (("P1",), lambda: [bench_core.p1_runner_overhead(**size["P1"])]),
        (("P2",), lambda: [bench_core.p2_batching(**size["P2"])]),
        (("P3",), lambda: [bench_tracking.p3_tracking_vs_naive(tmp, **size["P3"])]),
        (("P4",), lambda: [bench_tracking.p4_tracking_growth(tmp, **size["P4"])]),
        (("P5", "P6", "P8", "P9"), lambda: bench_sweep.p5_p6_sweeps(tmp, **size["P5"])),
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gdexp-bench-"))
    # Everything gdexp writes during the benchmarks lands in the temporary folder.
    os.environ["GDEXP_OUTPUTS"] = str(tmp / "outputs")
    from common import machine, say

    report = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
              "quick": args.quick, "sizes": {k: v[1 if args.quick else 0]
                                             for k, v in SIZES.items()},
              "machine": machine(), "code": git_state(), "goals": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    say(f"gdexp benchmarks ({'quick' if args.quick else 'full'}); temporary files in {tmp}")
    try:
        for ids, bench in benchmarks(tmp, args.quick):
            wanted = [g for g in ids if g in args.only]
            if not wanted:
                continue
            try:
                rows = [r for r in bench() if r["id"] in wanted]
            except Exception as e:  # one broken benchmark should not hide the others
                traceback.print_exc()
                rows = [{"id": g, "goal": "(benchmark failed)", "ratio": None, "target": 0,
                         "op": "<=", "pass": False, "error": f"{type(e).__name__}: {e}"}
                        for g in wanted]
            for row in rows:
                say(f"{row['id']}: {fmt_ratio(row['ratio'], row['target'])} (target {row['op']} "
                    f"{fmt_ratio(row['target'], row['target'])}) -> "
                    f"{'ERROR' if row.get('error') else 'pass' if row['pass'] else 'FAIL'}")
            report["goals"].extend(rows)
            report["machine"]["load_average_end"] = machine()["load_average"]
            args.out.write_text(json.dumps(report, indent=2, default=str))
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["goals"].sort(key=lambda r: r["id"])
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(table(report["goals"]))
    print(f"\nratios are medians of per-round ratios of interleaved sides; details in {args.out}")
    return 0 if all(r["pass"] for r in report["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
