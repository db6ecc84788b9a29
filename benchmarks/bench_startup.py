"""P7: start-up of `gdexp run --help` against `import hydra`, and what the command imports."""
from __future__ import annotations

import os
import re
from pathlib import Path

from common import (PYTHON, gdexp_command, goal, interleave, paired_ratio, run_timed, say,
                    summary)

# Heavy packages that have no business in `gdexp run --help`.
LAZY = ("mlflow", "matplotlib", "sqlalchemy", "pandas", "scipy", "alembic", "flask")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def parse_importtime(text: str) -> list[dict]:
    """Rows of `python -X importtime` output: module, self and cumulative µs, nesting depth."""
    rows = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append({"module": m.group(4), "self_us": int(m.group(1)),
                         "cumulative_us": int(m.group(2)), "depth": (len(m.group(3)) - 1) // 2})
    return rows


def import_report(cwd: Path, env: dict, top: int = 12) -> dict:
    """What `gdexp run --help` imports: the costliest top-level imports and the lazy ones."""
    cmd = gdexp_command()
    # The console script is a Python file: run it under the same interpreter with -X importtime.
    target = cmd if cmd[0] == PYTHON else [PYTHON, *cmd]
    proc = run_timed([target[0], "-X", "importtime", *target[1:], "run", "--help"],
                     env=env, cwd=cwd)
    rows = parse_importtime(proc["output"])
    top_level = sorted((r for r in rows if r["depth"] == 0), key=lambda r: -r["cumulative_us"])
    heavy = sorted((r for r in rows), key=lambda r: -r["self_us"])
    loaded = {r["module"].split(".")[0] for r in rows}
    return {"modules": len(rows),
            "total_import_ms": sum(r["self_us"] for r in rows) / 1000,
            "top_level": [{"module": r["module"], "cumulative_ms": r["cumulative_us"] / 1000}
                          for r in top_level[:top]],
            "top_self": [{"module": r["module"], "self_ms": r["self_us"] / 1000}
                         for r in heavy[:top]],
            "lazy_packages_imported": sorted(p for p in LAZY if p in loaded)}


def p7_startup(tmp: Path, rounds: int) -> dict:
    say(f"P7: `gdexp run --help` vs `python -c 'import hydra'`, {rounds} rounds")
    env = dict(os.environ)
    help_cmd = gdexp_command() + ["run", "--help"]
    hydra_cmd = [PYTHON, "-c", "import hydra"]
    text = run_timed(help_cmd, env=env, cwd=tmp)["output"]
    assert "gdexp run" in text and "objective" in text, text[-2000:]
    cpu_samples = {"help": [], "import_hydra": []}

    def side(name, cmd):
        def run():
            timing = run_timed(cmd, env=env, cwd=tmp)
            cpu_samples[name].append(timing["cpu"])
            return timing["wall"]
        return run

    samples = interleave({"help": side("help", help_cmd),
                          "import_hydra": side("import_hydra", hydra_cmd)}, rounds, "P7")
    stats = paired_ratio(cpu_samples["help"], cpu_samples["import_hydra"])
    wall_stats = paired_ratio(samples["help"], samples["import_hydra"])
    say("  profiling imports with -X importtime")
    imports = import_report(tmp, env)
    return goal("P7", "`gdexp run --help` start-up / `python -c 'import hydra'`",
                stats["ratio"], 1.5, "<=", details={
                    "rounds": rounds, "clock": "CPU of the child process (user+sys)",
                    "cpu_seconds": {k: summary(v) for k, v in cpu_samples.items()},
                    "wall_seconds": {k: summary(v) for k, v in samples.items()},
                    "wall_ratio": wall_stats["ratio"], "imports": imports, **stats})
