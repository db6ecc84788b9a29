"""`gdexp reproduce`: re-run a logged run from its own resolved config and check it bit for bit."""
from __future__ import annotations

import argparse
import copy
import csv
import io
import re
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from . import config, tracking
from .config import ConfigError

PROG = "gdexp reproduce"
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
TRACE_FILE = "trace.npz"
STARTS_FILE = "starts.csv"
OUTCOME_TAGS = ("status", "stop_rule", "basin", "diverged_at_step")
# Versions whose change may change the numbers (results of large matrix products depend
# on the BLAS and its CPU kernel; runs pin BLAS to one thread): a change warns.
VERSION_TAGS = ("code.commit", "code.dirty", "numpy.version", "autograd.version", "python.version",
                "blas.library", "blas.version", "blas.architecture")
# Hydra's instantiation keys: a config read back from a run is data, never code to call.
HYDRA_CALL_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
PLAIN_VALUE = "a logged config must hold plain values only"
# Bounds for a config read back: a run's config.yaml is ~3 KB with ~150 nodes.
MAX_YAML_BYTES = 1_000_000
MAX_YAML_NODES = 100_000


class ReproduceError(Exception):
    """A one-line reason why a run cannot be reproduced."""


# --------------------------------------------------------------------------------------------
# Reading a config back: plain data only, never interpolated, never instantiated.
# --------------------------------------------------------------------------------------------

class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats without a dot (1e-3), no duplicate keys and
    no anchors or aliases: a few nested aliases expand to billions of nodes (an "alias
    bomb"), and gdexp never writes them. The node count is bounded as well."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ReproduceError(f"line {event.start_mark.line + 1}: YAML anchors and aliases "
                                 f"refused (&/*; gdexp never writes them); {PLAIN_VALUE}")
        self.nodes = getattr(self, "nodes", 0) + 1
        if self.nodes > MAX_YAML_NODES:
            raise ReproduceError(f"more than {MAX_YAML_NODES} YAML nodes refused; "
                                 f"{PLAIN_VALUE}")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise ReproduceError(f"duplicate key {key_node.value!r} "
                                         f"(line {key_node.start_mark.line + 1})")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_PlainLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str, source: str) -> Any:
    """Plain Python data from YAML text, with the safe loader (no tags that build objects)."""
    if len(text) > MAX_YAML_BYTES:
        raise ReproduceError(f"{source}: {len(text)} characters refused (at most "
                             f"{MAX_YAML_BYTES}); {PLAIN_VALUE}")
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except ReproduceError as e:
        raise ReproduceError(f"{source}: {e}") from None
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark is not None else "?"
        raise ReproduceError(f"{source}: line {line}: YAML tag refused ({e.problem}); "
                             f"{PLAIN_VALUE}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ReproduceError(f"{source}: not valid YAML{where} ({problem})") from None


def check_plain(value: Any, source: str, key: str = "") -> None:
    """Refuse anything but str/int/float/bool/null in dicts and lists, interpolations and
    Hydra instantiation keys; the message names the dotted key."""
    where = f"{source}: {key or '(top level)'}"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ReproduceError(f"{where}: key {k!r} is not text; {PLAIN_VALUE}")
            name = f"{key}.{k}" if key else k
            if k in HYDRA_CALL_KEYS:
                raise ReproduceError(f"{source}: {name}: Hydra instantiation key refused; "
                                     f"{PLAIN_VALUE} (nothing in it is imported or called)")
            if "${" in k:
                raise ReproduceError(f"{source}: {name}: interpolation in a key refused; "
                                     f"{PLAIN_VALUE}")
            check_plain(v, source, name)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_plain(v, source, f"{key}[{i}]" if key else f"[{i}]")
    elif isinstance(value, str):
        if "${" in value:
            raise ReproduceError(f"{where}: {value!r} is an interpolation or resolver, refused; "
                                 f"{PLAIN_VALUE} (nothing in it is resolved)")
        if value == "???":
            raise ReproduceError(f"{where}: '???' (a missing value) refused; {PLAIN_VALUE}")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ReproduceError(f"{where}: a YAML value of type {type(value).__name__} refused; "
                             f"{PLAIN_VALUE}")


def read_config(text: str, source: str) -> dict:
    """The resolved config of a run as checked plain data (a dict of groups)."""
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ReproduceError(f"{source}: expected a mapping of config groups, got "
                             f"{type(data).__name__}")
    check_plain(data, source)
    if "hydra" in data:
        raise ReproduceError(f"{source}: hydra: unexpected in a run's config (this is Hydra's "
                             "own settings file, not the run's config)")
    if not isinstance(data.get("tracking"), dict):
        raise ReproduceError(f"{source}: tracking: missing or not a group; cannot tell where "
                             "to log the new run")
    return data


def read_overrides(text: Optional[str], source: str) -> list[str]:
    """The original command-line overrides: a list of strings, recorded again as text only."""
    if text is None:
        return []
    data = parse_yaml(text, source)
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ReproduceError(f"{source}: expected a list of override strings")
    return data


def to_dictconfig(data: dict):
    """A struct-mode DictConfig (as Hydra hands one to a task) from checked plain data."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(data)
    OmegaConf.set_struct(cfg, True)
    return cfg


# --------------------------------------------------------------------------------------------
# The original: where it is, what it ran, what it produced.
# --------------------------------------------------------------------------------------------

@dataclass
class Original:
    """One run to reproduce, from the store (RUN_ID) or from its run folder (PATH)."""

    label: str                          # the run id or the folder, recorded as reproduced_from
    config: dict                        # checked plain data of its config.yaml
    overrides: list[str]
    trace: Optional[Path] = None
    starts: Optional[Path] = None
    run: Any = None                     # the MLflow run (RUN_ID mode)
    experiment: Optional[str] = None
    uri: Optional[str] = None
    hydra_config: Optional[dict] = None  # PATH mode: .hydra/config.yaml, for a cross-check


def from_run(run_id: str, uri: str, flag: str, dst: Path, check: bool):
    """Find the run in the store and fetch its config (and, for --check, its results)."""
    mlflow_client = tracking.open_existing(
        uri, flag, "; pass --uri or set GDEXP_OUTPUTS to the folder the run wrote to")
    try:
        run = tracking.get_run(mlflow_client, run_id)
    except ConfigError as e:
        raise ReproduceError(str(e)) from None
    if run is None:
        raise ReproduceError(f"RUN_ID: no run {run_id!r} in {uri}; pass --uri for another store")
    run_id = run.info.run_id  # the full id when a prefix was given
    if run.data.tags.get("gdexp.sweep") == "true":
        children = tracking.child_run_ids(mlflow_client, run.info.experiment_id, run_id)
        hint = f"; e.g. {PROG} {children[0]}" if children else ""
        raise ReproduceError(f"RUN_ID: {run_id} is a sweep run with {len(children)} child "
                             f"runs; reproduce a child run instead{hint}")
    wanted = (CONFIG_FILE, OVERRIDES_FILE) + ((TRACE_FILE, STARTS_FILE) if check else ())
    files = tracking.fetch_artifacts(mlflow_client, run_id, wanted, dst)
    if CONFIG_FILE not in files:
        raise ReproduceError(f"RUN_ID: run {run_id} has no {CONFIG_FILE} artifact; only runs "
                             "logged by `gdexp run` can be reproduced")
    if check and TRACE_FILE not in files:
        raise ReproduceError(f"RUN_ID: run {run_id} has no {TRACE_FILE} artifact to compare "
                             "with; run without --check")
    source = f"run {run_id} {CONFIG_FILE}"
    original = Original(
        label=run_id, config=read_config(files[CONFIG_FILE].read_text(), source),
        overrides=read_overrides(_text(files.get(OVERRIDES_FILE)),
                                 f"run {run_id} {OVERRIDES_FILE}"),
        trace=files.get(TRACE_FILE), starts=files.get(STARTS_FILE), run=run,
        experiment=mlflow_client.get_experiment(run.info.experiment_id).name, uri=uri)
    return original, mlflow_client


def from_path(folder: Path, check: bool) -> Original:
    """A Hydra job folder: its artifacts/config.yaml (resolved) or else .hydra/config.yaml."""
    folder = folder.resolve()
    art = folder / "artifacts"
    hydra_file = folder / ".hydra" / "config.yaml"
    config_file = art / CONFIG_FILE if (art / CONFIG_FILE).is_file() else hydra_file
    if not config_file.is_file():
        raise ReproduceError(f"PATH: {str(folder)!r} holds neither artifacts/{CONFIG_FILE} nor "
                             ".hydra/config.yaml; expected a run folder under outputs/")
    if check and not (art / TRACE_FILE).is_file():
        raise ReproduceError(f"PATH: no artifacts/{TRACE_FILE} in {str(folder)!r} to compare "
                             "with; run without --check")
    overrides_file = art / OVERRIDES_FILE
    if not overrides_file.is_file():
        overrides_file = folder / ".hydra" / "overrides.yaml"
    original = Original(
        label=str(folder), config=read_config(config_file.read_text(), str(config_file)),
        overrides=read_overrides(_text(overrides_file), str(overrides_file)),
        trace=art / TRACE_FILE if (art / TRACE_FILE).is_file() else None,
        starts=art / STARTS_FILE if (art / STARTS_FILE).is_file() else None)
    if check and config_file != hydra_file and hydra_file.is_file():
        # Only compared, never used: interpolations in it are skipped, not refused.
        data = parse_yaml(hydra_file.read_text(), str(hydra_file))
        original.hydra_config = data if isinstance(data, dict) else None
    return original


def _text(path: Optional[Path]) -> Optional[str]:
    return path.read_text() if path is not None and path.is_file() else None


# --------------------------------------------------------------------------------------------
# Comparison: one line per difference.
# --------------------------------------------------------------------------------------------

def _fmt_delta(a: np.ndarray, b: np.ndarray) -> str:
    with np.errstate(all="ignore"):
        delta = np.abs(a.astype(float) - b.astype(float))
    finite = delta[np.isfinite(delta)]
    parts = [f"max |Δ| {finite.max():.2g}"] if finite.size else []
    if finite.size < delta.size:
        parts.append(f"{delta.size - finite.size} where only one side is finite")
    return f" ({', '.join(parts)})" if parts else ""


def array_differences(name: str, a: np.ndarray, b: np.ndarray) -> list[str]:
    """Bit-identity of two arrays (NaN equals NaN); a line describing how they differ."""
    if a.shape != b.shape:
        return [f"{name} has shape {a.shape} in the original but {b.shape} now"]
    if a.dtype != b.dtype:
        return [f"{name} has dtype {a.dtype} in the original but {b.dtype} now"]
    if a.dtype.kind in "fc":
        same = (a == b) | (np.isnan(a) & np.isnan(b))
    else:
        same = a == b
    bad = int(a.size - np.count_nonzero(same))
    if bad:
        numeric = a.dtype.kind in "biufc"
        delta = _fmt_delta(a[~same], b[~same]) if numeric else ""
        return [f"{name} differs at {bad} of {a.size} entries{delta}"]
    if a.tobytes() != b.tobytes():
        return [f"{name} is equal in value but not in bits (signed zeros or NaN payloads)"]
    return []


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ReproduceError(f"{what}: cannot read {path} ({e})") from None


def compare_traces(old: dict, new: dict) -> tuple[int, list[str]]:
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            lines.append(f"{TRACE_FILE}:{key} is in the original but not in the new run")
        elif key not in old:
            lines.append(f"{TRACE_FILE}:{key} is in the new run but not in the original")
        else:
            lines += array_differences(f"{TRACE_FILE}:{key}", old[key], new[key])
    return len(set(old) & set(new)), lines


def compare_metrics(old: dict, new: dict) -> tuple[int, list[str]]:
    """Every metric's whole logged history: same steps, same float bits."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in new or key not in old:
            side = "the original" if key in old else "the new run"
            lines.append(f"metric:{key} is logged only in {side}")
            continue
        a, b = old[key], new[key]
        if len(a) == 1 and len(b) == 1 and a[0][0] == b[0][0]:
            if not _same_float(a[0][1], b[0][1]):
                lines.append(f"metric:{key} is {a[0][1]!r} in the original but {b[0][1]!r} now")
        elif [s for s, _ in a] != [s for s, _ in b]:
            lines.append(f"metric:{key} is logged at other steps now ({len(a)} points in "
                         f"the original, {len(b)} now)")
        else:
            lines += array_differences(f"metric:{key}", np.array([v for _, v in a]),
                                       np.array([v for _, v in b]))
    return len(set(old) & set(new)), lines


def _same_float(a: float, b: float) -> bool:
    return np.array([a]).tobytes() == np.array([b]).tobytes() or (a != a and b != b)


def compare_tags(old: dict, new: dict) -> tuple[int, list[str]]:
    lines, n = [], 0
    for key in OUTCOME_TAGS:
        if key in old or key in new:
            n += 1
            if old.get(key) != new.get(key):
                lines.append(f"tag:{key} is {old.get(key)!r} in the original but "
                             f"{new.get(key)!r} now")
    return n, lines


def compare_params(logged: dict, config_data: dict, what: str) -> tuple[int, list[str]]:
    """The original's logged params against its flattened config artifact (tampering check)."""
    from .tracking import flatten

    flat = {k: v[:6000] for k, v in flatten(config_data).items()}  # as logged, capped
    lines = []
    for key in sorted(set(logged) | set(flat)):
        if key not in flat:
            lines.append(f"params:{key} is logged as {logged[key]!r} but missing from {what}")
        elif key not in logged:
            lines.append(f"params:{key} is {flat[key]!r} in {what} but was never logged")
        elif logged[key] != flat[key]:
            lines.append(f"params:{key} is logged as {logged[key]!r} but {what} has "
                         f"{flat[key]!r}")
    return len(set(logged) & set(flat)), lines


def compare_hydra_config(hydra_data: dict, config_data: dict) -> tuple[int, list[str]]:
    """PATH mode: the composed .hydra/config.yaml against the resolved artifacts/config.yaml,
    wherever the composed value is not an interpolation."""
    from .tracking import flatten

    composed, resolved = flatten(hydra_data), flatten(config_data)
    lines, n = [], 0
    for key in sorted(set(composed) | set(resolved)):
        if "${" in composed.get(key, ""):
            continue
        n += 1
        if composed.get(key) != resolved.get(key):
            lines.append(f"config:{key} is {composed.get(key)!r} in .hydra/config.yaml but "
                         f"{resolved.get(key)!r} in artifacts/{CONFIG_FILE}")
    return n, lines


def compare_starts(old: Path, new: Path) -> tuple[int, list[str]]:
    """The per-start table (final x, f, status, stop rule, basin) row by row, as text."""
    rows_old = list(csv.reader(io.StringIO(old.read_text())))
    rows_new = list(csv.reader(io.StringIO(new.read_text())))
    if rows_old[:1] != rows_new[:1]:
        return 0, [f"{STARTS_FILE} has other columns in the original than now"]
    a, b = rows_old[1:], rows_new[1:]
    if len(a) != len(b):
        return 0, [f"{STARTS_FILE} has {len(a)} starts in the original but {len(b)} now"]
    bad = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if bad:
        header = rows_old[0]
        cols = sorted({header[j] for i in bad for j, (u, v) in enumerate(zip(a[i], b[i]))
                       if u != v})
        return len(a), [f"{STARTS_FILE} differs in {len(bad)} of {len(a)} starts "
                        f"(first: start {bad[0]}; columns {', '.join(cols)})"]
    return len(a), []


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --------------------------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------------------------

def code_warnings(tags: dict) -> list[str]:
    """What differs between the code/environment recorded by the original and today's."""
    from . import pipeline

    now = {**pipeline.code_version(), **pipeline.environment_tags()}
    changed = [f"{key} {tags.get(key, '(not recorded)')} -> {now.get(key)}"
               for key in VERSION_TAGS if tags.get(key) != now.get(key)]
    out = []
    if changed:
        out.append("warning: the code or environment differs from the original run's ("
                   + "; ".join(changed) + "); reproducing anyway")
    if "true" in (tags.get("code.dirty"), now.get("code.dirty")):
        out.append("warning: uncommitted changes in the original's or today's code "
                   "(code.dirty=true): the same commit does not guarantee the same code")
    return out


def new_out_dir() -> Path:
    """A fresh folder outputs/reproduce/<timestamp> (never an existing one)."""
    root = config.outputs_dir() / "reproduce"
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Re-run a run from the resolved config it logged (not from today's conf/) "
                    "into outputs/reproduce/<timestamp>, log it as a new run tagged "
                    "reproduced_from, and optionally check the results are bit-identical.")
    p.add_argument("target", metavar="RUN_ID|PATH",
                   help="an MLflow run id, or a run folder holding artifacts/config.yaml or "
                        ".hydra/config.yaml")
    p.add_argument("--check", action="store_true",
                   help="compare trace.npz, metrics, outcome tags and starts.csv with the "
                        "original and the original's params with its config; exit 1 on any "
                        "difference")
    p.add_argument("--uri", metavar="URI",
                   help="the MLflow store holding RUN_ID (default: the embedded store under "
                        "outputs/); for a PATH, the store to log the new run to (default: the "
                        "one its config names)")
    return p


def _looks_like_path(target: str) -> bool:
    return "/" in target or "\\" in target or target.startswith(".") or target.startswith("~")


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _reproduce(args)
    except (ReproduceError, ConfigError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return getattr(e, "code", 2)
    except Exception as e:  # noqa: BLE001 - a full or read-only disk: one line
        line = tracking.explain(e, args.uri)
        if line is None:
            raise
        print(f"{PROG}: error: {line}", file=sys.stderr)
        return 1


def _reproduce(args) -> int:
    from . import pipeline, tracking

    target = Path(args.target).expanduser()
    with tempfile.TemporaryDirectory(prefix="gdexp-reproduce-") as tmp:
        store_client = None
        if target.is_dir():
            original = from_path(target, args.check)
        elif target.exists() or _looks_like_path(args.target):
            raise ReproduceError(f"PATH: {args.target!r} is not a run folder "
                                 f"({'not a folder' if target.exists() else 'no such folder'})")
        else:
            uri = args.uri or tracking.default_uri()
            original, store_client = from_run(args.target, uri, "--uri" if args.uri else
                                              "RUN_ID", Path(tmp), args.check)

        data = copy.deepcopy(original.config)  # the original's stays as logged, for --check
        trk = data["tracking"]
        trk["skip_finished"] = False  # the original itself would otherwise be "the same run"
        if original.run is not None:
            trk.update(enabled=True, uri=original.uri, experiment=original.experiment)
        elif args.uri:
            trk.update(enabled=True, uri=args.uri)
        cfg = to_dictconfig(data)

        what = f"run {original.label}" if original.run is not None else original.label
        print(f"reproducing {what} from its logged config", flush=True)
        if original.run is not None:
            for line in code_warnings(original.run.data.tags):
                print(line, file=sys.stderr, flush=True)

        from omegaconf.errors import OmegaConfBaseException

        out_dir = new_out_dir()
        try:
            outcome = pipeline.execute(cfg, out_dir, original.overrides,
                                       extra_tags={"reproduced_from": original.label})
        except tracking.StoreError:
            _remove_if_empty(out_dir)
            raise
        except (ConfigError, OmegaConfBaseException) as e:
            # An old config the current code rejects (renamed keys, removed options); this
            # happens before any run exists, so the empty folder goes too.
            _remove_if_empty(out_dir)
            first = str(e).strip().splitlines()[0]
            raise ReproduceError(f"{what}: its config does not fit the current code: "
                                 f"{first}") from None
        print(f"  files: {out_dir}")
        if not args.check:
            return 0
        return _check(original, outcome, out_dir, store_client)


def _check(original: Original, outcome, out_dir: Path, store_client) -> int:
    art = out_dir / "artifacts"
    lines: list[str] = []
    counts = []
    if original.run is not None:
        # First: a config that no longer matches the logged params explains everything below.
        n, diff = compare_params(original.run.data.params, original.config,
                                 f"its {CONFIG_FILE} artifact")
        params_count = _count(n, "param")
        lines += diff
    n, diff = compare_traces(load_npz(original.trace, f"the original's {TRACE_FILE}"),
                             load_npz(art / TRACE_FILE, f"the new {TRACE_FILE}"))
    counts.append(_count(n, "array"))
    lines += diff
    if original.run is not None:
        if outcome.run_id is None:
            lines.append("the new run was not logged; nothing to compare metrics with")
        else:
            new_run = store_client.get_run(outcome.run_id)
            n, diff = compare_metrics(tracking.metric_histories(store_client, original.run),
                                      tracking.metric_histories(store_client, new_run))
            counts.append(_count(n, "metric"))
            lines += diff
            n, diff = compare_tags(original.run.data.tags, new_run.data.tags)
            counts.append(_count(n, "tag"))
            lines += diff
        counts.append(params_count)
    elif original.hydra_config is not None:
        n, diff = compare_hydra_config(original.hydra_config, original.config)
        counts.append(_count(n, "config key"))
        lines += diff
    if original.starts is not None and (art / STARTS_FILE).is_file():
        n, diff = compare_starts(original.starts, art / STARTS_FILE)
        counts.append(_count(n, "start row"))
        lines += diff
    if lines:
        print("NOT reproduced:")
        for line in lines:
            print(f"  {line}")
        return 1
    print(f"reproduced: bit-identical ({', '.join(counts)} compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
