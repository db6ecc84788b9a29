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


def _group_choices(overrides) -> frozenset:
    """The (group, option) pairs among a job's overrides: what changes its defaults list."""
    from .paths import CONF_DIR

    choices = set()
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~").split("@")[0]  # group@package=option
        if "/" in key or key == "experiment" or (CONF_DIR / key).is_dir():
            choices.add((key, value))
    return frozenset(choices)


def _job_config(loader, master, overrides, composed: dict):
    """A job's config (without its hydra node). Jobs that choose the same group options share
    a defaults list, so once the first of them is composed (~0.1 s) the others only need
    their own values applied, as Hydra applies them after composing; a sweep's jobs all set
    the same keys, so each job's values overwrite the previous job's in one working copy."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from omegaconf import OmegaConf, open_dict

    choices = _group_choices(overrides)
    parsed = composed.setdefault("parsed", {})  # a sweep's jobs repeat most override strings
    todo = [o for o in overrides if not o.startswith("hydra.") and o not in parsed]
    if todo:
        parsed.update(zip(todo, OverridesParser.create().parse_overrides(todo)))
    lines = [o for o in overrides if not o.startswith("hydra.")
             and (parsed[o].key_or_group, parsed[o].get_value_element_as_str()) not in choices]
    keys = frozenset(parsed[o].key_or_group for o in lines)
    known = composed.get(choices)
    if known is None or known[1] != keys or any(parsed[o].is_delete() for o in lines):
        cfg = loader.load_sweep_config(master_config=master, sweep_overrides=list(overrides))
        with open_dict(cfg):
            del cfg["hydra"]
        composed[choices] = (OmegaConf.create(OmegaConf.to_container(cfg)), keys, set(lines))
        return cfg
    values = [parsed[o] for o in lines if o not in known[2]]  # what differs from the last job
    for o in values:
        if o.type == OverrideType.ADD:  # present in the copy already: it came from the same +key
            o.type = OverrideType.FORCE_ADD
    ConfigLoaderImpl._apply_overrides_to_config(values, known[0])
    known[2].clear()
    known[2].update(lines)
    return known[0]


def _validate_choices(self, batch) -> None:
    """The sweeper's check, before any job starts, that every job composes and passes
    gdexp's own checks (config.build, check_tracking, sweep_metric: nothing descends); only
    then does the sweep's parent run exist. Replaces Hydra's check, which composes every job
    only to compose it again in the launcher."""
    from hydra.errors import HydraException, MissingConfigException

    from . import callbacks, config

    loader = getattr(self, "hydra_context", None)
    loader = loader.config_loader if loader is not None else self.config_loader
    composed: dict = {}
    for overrides in batch:
        try:
            cfg = _job_config(loader, self.config, overrides, composed)
            config.build(cfg)
            config.check_tracking(cfg)
            config.sweep_metric(cfg)
        except config.ConfigError as e:
            _fail(str(e))
        except MissingConfigException as e:
            group, _, value = (e.missing_cfg_file or "").rpartition("/")
            allowed = ", ".join(e.options or []) or "(none)"
            _fail(f"{group or 'config'}: expected one of {allowed}, got {value!r}")
        except HydraException as e:
            _fail(" ".join(str(e).split()))
    callbacks.open_sweep(self.config)


GRAMMAR = "https://hydra.cc/docs/1.3/advanced/override_grammar/basic/"


def _choices(argv: list[str]) -> dict[str, dict]:
    """The options a command line picks (``group=option``, else conf/config.yaml's defaults)
    as ``{group: {"name": ...}}``, so that a message can list the keys of those options."""
    from .config import default_choices, option_name

    chosen = default_choices()
    for arg in argv:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~").split("@")[0]
        if eq and "/" not in key and "," not in value:
            name = option_name(key, value)
            if name is not None:
                chosen[key] = {"name": name}
    return chosen


def hydra_error_message(error: Exception, argv: list[str]) -> str:
    """One line for a mistake that Hydra or OmegaConf catches while composing the config:
    the key, the bad value and what is allowed, as gdexp's own checks say it."""
    import difflib

    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from .config import unknown_key_message

    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, value = error.missing_cfg_file.rpartition("/")
        if error.options:
            near = difflib.get_close_matches(value, error.options, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]}?)" if near else ""
            return (f"{group or value}: expected one of {', '.join(error.options)}, "
                    f"got {value!r}{hint}")
        return f"{group or value}: no config {error.missing_cfg_file!r} ({first})"
    if isinstance(error, OverrideParseException):
        reason = first if not first.startswith("Error parsing") else \
            (text.splitlines()[1] if len(text.splitlines()) > 1 else first)
        return (f"{error.override}: expected an override KEY=VALUE ({reason}); "
                f"see {GRAMMAR}")
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    full_key = getattr(cause, "full_key", None)
    if full_key and ("not in struct" in str(cause) or "Missing key" in str(cause)):
        return unknown_key_message(full_key, _choices(argv))
    if first.startswith("Could not append to config. An item is already at"):
        key = first.split("'")[1]
        return f"+{key}: {key} is already in the config; set it without '+' ({key}=VALUE)"
    if first.startswith("Could not delete from config."):
        key = first.split("'")[1]
        return f"~{key}: no key {key!r} in the config to delete"
    return f"{full_key}: {first}" if full_key else first


def _report_hydra_errors(argv: list[str]) -> None:
    """Hydra reports a composition error in ~15 lines and exits 1; gdexp gives its one line
    and exit 2. Hydra runs every step (composition, --cfg, the run, the sweep) through
    ``run_and_report``; wrapping it turns Hydra's and OmegaConf's own exceptions into that
    line and leaves everything else to Hydra's report."""
    from hydra._internal import utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    report = getattr(hydra_utils.run_and_report, "__wrapped__", hydra_utils.run_and_report)

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except (HydraException, OmegaConfBaseException) as e:
                _fail(hydra_error_message(e, argv))
        return report(guarded)

    run_and_report.__wrapped__ = report
    hydra_utils.run_and_report = run_and_report


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
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from . import callbacks, pipeline, processes
    from .config import ConfigError, sweep_metric

    hydra_cfg = HydraConfig.get()
    parent = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        parent = callbacks.sweep_parent()
    try:
        # a worker process of joblib or submitit did not come through main()
        with processes.job_signals(), processes.reader_safe_output():
            metric = sweep_metric(cfg)
            # the overrides as typed: a `${...}` in one is text here, not an interpolation
            overrides = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
            outcome = pipeline.execute(cfg, Path(hydra_cfg.runtime.output_dir), overrides,
                                       parent, job=callbacks.current_job())
    except ConfigError as e:
        _fail(str(e), getattr(e, "code", 2))
    except OmegaConfBaseException as e:  # a value OmegaConf cannot resolve, e.g. ${nosuch}
        _fail(f"{e.full_key}: {str(e).splitlines()[0]}" if e.full_key else str(e))
    except KeyboardInterrupt as e:
        if processes.is_launcher():
            raise
        # a worker stopped by its launcher (or a terminal's Ctrl-C): its run is KILLED; the
        # launcher reports, so the worker ends without a word
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(processes.exit_status(e))
    return outcome.sweep_value(metric, int(cfg.stop.max_steps))


def _report_store_errors() -> None:
    """One line instead of Hydra's traceback for store and disk failures met outside a job
    (Hydra writing the job folder into a full or read-only outputs/, the sweep callback
    opening the store)."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report
    if getattr(original, "gdexp", False):
        return

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except BrokenPipeError:  # Hydra would print its traceback
                raise SystemExit(_reader_gone()) from None
            except Exception as e:  # noqa: BLE001 - anything not explained is re-raised
                from .tracking import explain

                line = explain(e)
                if line is None:
                    raise
                _fail(line, getattr(e, "code", 1))
        return original(guarded)

    run_and_report.gdexp = True
    hydra_utils.run_and_report = run_and_report


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

    from . import callbacks, processes
    from .config import CONF_DIR, register_resolvers

    if not (CONF_DIR / "config.yaml").exists():
        _fail(f"no config at {CONF_DIR}; install gdexp from its source folder "
              "(pip install -e .)")
    register_resolvers()
    from hydra.plugins.sweeper import Sweeper

    Sweeper.validate_batch_is_legal = _validate_choices
    _report_store_errors()
    _report_hydra_errors(argv)
    main = hydra.main(config_path=str(CONF_DIR), config_name="config",
                      version_base="1.3")(_task)
    # Hydra names the program in an installed completion script after argv[0]: it must be
    # the command the shell sees, `gdexp`, which passes -sc on to here (see complete())
    sys.argv = ["gdexp" if completing else "gdexp run", *argv]
    # Workers (joblib's, submitit's) inherit this and know they are not the launcher.
    os.environ[processes.LAUNCHER_ENV] = str(os.getpid())
    processes.install()
    status = "FAILED"
    try:
        main()
        status = "FINISHED"
    except SystemExit as e:
        status = "FINISHED" if e.code in (0, None) else "FAILED"
        if e.code == 2:  # refused in one line: no folder of its own is left behind
            callbacks.clear_refused()
        raise
    except KeyboardInterrupt as e:
        # one path for Ctrl-C and SIGTERM, whatever the launcher: stop every worker, then end
        # what they left RUNNING and the sweep run KILLED
        status = "KILLED"
        with processes.signals_ignored():
            processes.stop_descendants()
            callbacks.clear_half_written()
            callbacks.close_sweep(status)
        raise
    finally:
        with processes.signals_ignored():
            callbacks.close_sweep(status)
        processes.answer_ctrl_c_here()
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
    from .processes import freeze_after_imports, reader_safe_output

    freeze_after_imports()

    try:
        with reader_safe_output():
            return _dispatch(argv)
    except BrokenPipeError:  # written past the safe streams
        return _reader_gone()
    except KeyboardInterrupt as e:
        from .processes import exit_status

        name = "SIGTERM" if exit_status(e) == 143 else "Ctrl-C"
        print(f"gdexp: interrupted by {name}; every unfinished run ended KILLED",
              file=sys.stderr, flush=True)
        return exit_status(e)


def _reader_gone() -> int:
    """The reader of stdout went away (`gdexp report | head -1`): stop quietly with a pipe
    writer's status, the interpreter's last flush going nowhere instead of raising again (a
    run still open ends as on any other error)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def _dispatch(argv: list) -> int:
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
