"""Command line: `gdexp SUBCOMMAND`; `gdexp run` is the Hydra app."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

USAGE = """\
usage: gdexp SUBCOMMAND [ARGS]

Experiments on gradient descent, configured with Hydra and tracked in MLflow.

subcommands:
  run [OVERRIDES]   run one config; `gdexp run -m key=a,b` sweeps; `gdexp run --help` lists
                    the config groups and options (presets: `gdexp run experiment=NAME`)
  reproduce RUN_ID|PATH [--check]
                    re-run a logged run from its own resolved config; --check compares
                    final points and curves bit for bit with the original
  report [EXPERIMENT] [--sweep ID]
                    table (terminal, CSV, markdown) and figures of the latest sweep, an
                    experiment or a given sweep; a sweep's report is also logged onto its
                    sweep run
  ui [--port 5000]  browse the runs in the MLflow UI; prints the runs-table link, Ctrl-C stops
  server [--port 5000]
                    an MLflow tracking server (SQL store) for `gdexp run tracking=server`

Tab completion of subcommands and `gdexp run` overrides (Hydra's):
  bash: eval "$(gdexp run -sc install=bash)"   zsh: the same, after
  `autoload -Uz bashcompinit && bashcompinit`   fish: gdexp run -sc install=fish | source

Everything a run writes goes under the project's outputs/ folder.
"""


def _fail(message: str, code: int = 2):
    print(f"gdexp: error: {message}", file=sys.stderr)
    sys.exit(code)


def register_experiments() -> None:
    """Presets in the top-level experiments/ folder become the config group `experiment`."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from .paths import EXPERIMENTS_DIR

    store = ConfigStore.instance()
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        store.store(group="experiment", name=path.stem, node=OmegaConf.load(path),
                    package="_global_")


def _uses_experiments(argv: list[str]) -> bool:
    """Whether a command line can need the `experiment` group: it names the group, or passes
    a flag (help, info, completion) that lists groups. Every Hydra composition (one per
    sweep job) deep-copies the config store, and joblib ships it to a worker with every
    job, so the presets are left out of it when no one asks for them."""
    return any("experiment" in a or (a.startswith("-") and a not in ("-m", "--multirun"))
               for a in argv)


def _validate_choices(self, batch) -> None:
    """The sweeper's check, before any job starts, that every job's config composes.

    Hydra's own check composes every job, and the launcher then composes each again (~0.1 s
    each here). The jobs of a batch differ only in the values of the swept keys, and a value
    can break composition only by choosing a config group option (a missing file); other
    values (wrong types, out of range) are caught by gdexp's own checks in the job. So this
    composes the first job and each first job that picks an option not seen before."""
    from .paths import CONF_DIR

    seen: set = set()
    loader = getattr(self, "hydra_context", None)
    loader = loader.config_loader if loader is not None else self.config_loader
    for i, overrides in enumerate(batch):
        choices = set()
        for override in overrides:
            key, _, value = override.partition("=")
            key = key.lstrip("+~").split("@")[0]  # group@package=option
            if "/" in key or key == "experiment" or (CONF_DIR / key).is_dir():
                choices.add((key, value))
        if i == 0 or not choices <= seen:
            loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            seen |= choices


COMPLETION_FLAGS = ("-sc", "--shell-completion")
COMPLETION_SHELLS = ("bash", "zsh", "fish")
COMPLETION_ACTIONS = ("install", "uninstall", "query")


def _check_completion(argv: list[str]) -> None:
    """``-sc ACTION=SHELL`` as Hydra accepts it, or the one-line error (Hydra would raise)."""
    i = next(i for i, a in enumerate(argv) if a in COMPLETION_FLAGS)
    value = argv[i + 1] if i + 1 < len(argv) else ""
    action, _, shell = value.partition("=")
    if action not in COMPLETION_ACTIONS or shell not in COMPLETION_SHELLS:
        allowed = ", ".join(f"{a}=SHELL" for a in COMPLETION_ACTIONS)
        _fail(f"{argv[i]}: expected {allowed} (SHELL: {', '.join(COMPLETION_SHELLS)}), "
              f"got {value or 'nothing'}")


def complete(argv: list[str]) -> int:
    """``gdexp -sc ...``: what an installed completion script calls (its first word, with
    COMP_LINE set to the line being typed). On ``gdexp run ...`` Hydra completes the
    overrides, seeing the line without the subcommand; on ``gdexp`` alone the subcommands;
    on other subcommands nothing (the shell then completes file names)."""
    _check_completion(argv)
    action = argv[argv.index(next(a for a in argv if a in COMPLETION_FLAGS)) + 1]
    if not action.startswith("query="):
        return run(argv)
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    typing_first = len(words) < 2 or (len(words) == 2 and not line.endswith(" "))
    if typing_first:
        prefix = words[1] if len(words) == 2 else ""
        sep = "\n" if action.endswith("fish") else " "
        print(sep.join(c for c in COMMANDS if c.startswith(prefix)))
        return 0
    if words[1] != "run":
        print()
        return 0
    # Hydra strips the program name, the first word: drop "run" after it
    os.environ["COMP_LINE"] = re.sub(r"^(\s*\S+)\s+run(\s|$)", r"\1\2", line, count=1)
    return run(argv)


def _task(cfg) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from . import callbacks, pipeline
    from .config import ConfigError, sweep_metric

    hydra_cfg = HydraConfig.get()
    parent = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        parent = callbacks.sweep_parent(hydra_cfg.sweep.dir)
    try:
        metric = sweep_metric(cfg)
        outcome = pipeline.execute(cfg, Path(hydra_cfg.runtime.output_dir),
                                   list(hydra_cfg.overrides.task), parent,
                                   job=callbacks.current_job())
    except ConfigError as e:
        _fail(str(e))
    return outcome.sweep_value(metric, int(cfg.stop.max_steps))


def run(argv: list[str]) -> int:
    """`gdexp run [overrides]`: Hydra composes conf/ with the overrides and runs (or sweeps)."""
    completing = any(a in COMPLETION_FLAGS for a in argv)
    if completing:
        _check_completion(argv)
    if argv in (["--help"], ["-h"]):
        from .help import quick_help

        text = quick_help()
        if text is not None:
            print(text)
            return 0
    import hydra

    from . import callbacks
    from .config import CONF_DIR, register_resolvers

    if not (CONF_DIR / "config.yaml").exists():
        _fail(f"no config at {CONF_DIR}; install gdexp from its source folder "
              "(pip install -e .)")
    register_resolvers()
    from hydra.plugins.sweeper import Sweeper

    Sweeper.validate_batch_is_legal = _validate_choices
    if _uses_experiments(argv):
        register_experiments()
    main = hydra.main(config_path=str(CONF_DIR), config_name="config",
                      version_base="1.3")(_task)
    # Hydra names the program in an installed completion script after argv[0]: it must be
    # the command the shell sees, `gdexp`, which passes -sc on to here (see complete())
    sys.argv = ["gdexp" if completing else "gdexp run", *argv]
    status = "FAILED"
    try:
        main()
        status = "FINISHED"
    except SystemExit as e:
        status = "FINISHED" if e.code in (0, None) else "FAILED"
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        callbacks.close_sweep(status)
    return 0


def reproduce(argv: list[str]) -> int:
    """`gdexp reproduce RUN_ID|PATH [--check]`: re-run a logged config and compare."""
    from .reproduce import main as reproduce_main

    return reproduce_main(argv)


def report(argv: list[str]) -> int:
    """`gdexp report [EXPERIMENT] [--sweep ID]`: table and figures of runs."""
    from .report import main as report_main

    return report_main(argv)


def ui(argv: list[str]) -> int:
    """`gdexp ui`: the MLflow UI on the runs' store."""
    from .serve import ui as serve_ui

    return serve_ui(argv)


def server(argv: list[str]) -> int:
    """`gdexp server`: an MLflow tracking server for `gdexp run tracking=server`."""
    from .serve import server as serve_server

    return serve_server(argv)


COMMANDS = {"run": run, "reproduce": reproduce, "report": report, "ui": ui, "server": server}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in COMPLETION_FLAGS:
        return complete(argv)
    if command not in COMMANDS:
        _fail(f"unknown subcommand {command!r}; available: {', '.join(COMMANDS)}")
    return COMMANDS[command](rest) or 0


if __name__ == "__main__":
    sys.exit(main())
