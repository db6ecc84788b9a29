"""`gdexp report`: a table and figures of a sweep's or an experiment's runs, read from MLflow."""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import config, formatting, tracking
from .config import ConfigError

DEFAULT_EXPERIMENT = "gdexp"
SWEEP_TAG = "gdexp.sweep"
ARTIFACT_DIR = "report"          # where a sweep's report lands among its parent run's artifacts
PAGE = 1000                      # runs per search request
MAX_CURVE_GRID = 4000            # points of the common step grid the loss curves are drawn on
MAX_LR_FIGURES = 6               # more groups than this share one outcome-vs-lr figure
IGNORED_PREFIXES = ("tracking.",)  # where a run was recorded, not what it computed
REPEAT_KEYS = ("seed",)          # varied to repeat a setting, not to change it
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# (column, param) shown for every run unless the param already leads the table as a varying key.
PARAM_COLUMNS = (("objective", "objective.name"), ("optimizer", "optimizer.name"),
                 ("lr", "optimizer.lr"), ("init", "init.name"))
RESULT_COLUMNS = ("status", "stop_rule", "steps", "final_loss", "basin")
# Fixed-target runtimes (COCO's aRT: steps spent over successes) compared across runs,
# for the targets f - f* <= 10^k that the runs logged.
ART_TARGETS = ("1e-2", "1e-6")

FILES = {"csv": "runs.csv", "markdown": "runs.md", "curves": "loss_curves.png",
         "lr": "outcome_vs_lr", "paths": "paths", "taylor": "taylor_ratio.png"}


def _slug(text: str) -> str:
    """``text`` as a safe file-name part."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_.")[:80]


class ReportError(Exception):
    """A one-line message for the user: what was asked for, what was found, what is possible."""


# ---------------------------------------------------------------- runs as plain records

@dataclass
class RunRecord:
    """What the report needs of one MLflow run, as plain Python values."""

    run_id: str
    name: str
    state: str                       # MLflow run status: FINISHED, FAILED, RUNNING, KILLED
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    start_time: int = 0
    experiment_id: str = ""

    @classmethod
    def from_run(cls, run) -> "RunRecord":
        return cls(run.info.run_id, run.info.run_name or run.info.run_id, run.info.status,
                   dict(run.data.params), dict(run.data.tags), dict(run.data.metrics),
                   run.info.start_time or 0, run.info.experiment_id)

    @property
    def status(self) -> str:
        """The descent's outcome tag; the MLflow state (failed, running, ...) when there is none."""
        return self.tags.get("status") or self.state.lower()

    @property
    def steps(self) -> Optional[float]:
        return self.metrics.get("steps", self.metrics.get("median_steps"))

    @property
    def final_loss(self) -> Optional[float]:
        return self.metrics.get("final_loss")


@dataclass
class Selection:
    """The runs of one report and where they came from."""

    uri: str
    experiment_id: str
    experiment: str
    runs: list
    parent: Optional[RunRecord] = None   # the sweep run, when reporting a sweep

    @property
    def label(self) -> str:
        """A file-system friendly name: sweep-<id prefix> or the experiment's name."""
        if self.parent is not None:
            return f"sweep-{self.parent.run_id[:8]}"
        return _slug(self.experiment) or "experiment"

    @property
    def title(self) -> str:
        """``sweep 2026-11-23 05:14:46`` (from the sweep folder when it has the usual name)."""
        if self.parent is None:
            return f"experiment {self.experiment}"
        parts = Path(self.parent.tags.get("sweep_dir", "")).parts[-2:]
        if len(parts) == 2 and re.fullmatch(r"\d{4}-\d\d-\d\d", parts[0]) \
                and re.match(r"\d\d-\d\d-\d\d", parts[1]):
            return f"sweep {parts[0]} {parts[1][:8].replace('-', ':')}"
        name = self.parent.name
        return name if name.startswith("sweep") else f"sweep {name}"

    @property
    def description(self) -> str:
        n = f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"
        if self.parent is None:
            return f"experiment {self.experiment!r} ({self.uri}), {n}"
        overrides = self.parent.params.get("sweep.overrides", "")
        return (f"sweep {self.parent.run_id} ({self.parent.name}) in experiment "
                f"{self.experiment!r} ({self.uri}), {n}" + (f": {overrides}" if overrides else ""))


# ---------------------------------------------------------------- finding the runs

def open_store(uri_arg: Optional[str]):
    """(uri, client) for --uri or the default store; never creates an empty sqlite store."""
    uri = tracking.resolve_uri(uri_arg)
    hint = "; `gdexp run` records runs there" + (
        "" if uri_arg else f" (outputs folder {config.outputs_dir()})")
    try:
        client = tracking.open_existing(uri, "--uri" if uri_arg else "no runs yet", hint)
    except ConfigError as e:
        raise ReportError(str(e)) from None
    tracking.reap_store(client)  # a run whose process died is not shown as running
    return uri, client


def _pages(search, **kwargs) -> list:
    """Every item of a paginated MLflow search."""
    items, token = [], None
    while True:
        page = search(max_results=PAGE, page_token=token, **kwargs)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _experiment(client, name: str, uri: str):
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        names = sorted(e.name for e in _pages(client.search_experiments))
        state = "unknown" if exp is None else "deleted"
        raise ReportError(f"EXPERIMENT: {state} experiment {name!r} in {uri}; available: "
                          f"{', '.join(names) or 'none'}")
    return exp


def _search(client, experiment_ids, filter_string: str = "") -> list[RunRecord]:
    runs = _pages(client.search_runs, experiment_ids=list(experiment_ids),
                  filter_string=filter_string, order_by=["attributes.start_time ASC"])
    return [RunRecord.from_run(r) for r in runs]


def _children(client, experiment_id: str, parent_id: str, parent_tags=None) -> list[RunRecord]:
    """A sweep's runs: its jobs' runs, and the FINISHED runs its jobs reused (skip_finished)."""
    runs = _search(client, [experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    prefix = tracking.REUSED_TAG + "."
    have = {r.run_id for r in runs}
    for key in sorted(parent_tags or {}):
        run_id = key[len(prefix):]
        if key.startswith(prefix) and run_id not in have:
            run = tracking.get_run(client, run_id)
            if run is not None and run.info.lifecycle_stage == "active":
                runs.append(RunRecord.from_run(run))
                have.add(run_id)
    return runs


def one_per_config(runs: list[RunRecord]) -> tuple[list[RunRecord], int]:
    """One run per config (its params, where it was recorded aside): the latest FINISHED
    one, else the latest. A re-launched sweep or a preset run twice then shows each setting
    once. Returns the runs kept and how many were left out."""
    best: dict[str, RunRecord] = {}
    for r in runs:
        params = {k: v for k, v in r.params.items() if not k.startswith(IGNORED_PREFIXES)}
        # a run still descending has logged no params yet: no config to share with another
        key = json.dumps(params, sort_keys=True) if params else r.run_id
        old = best.get(key)
        rank = (r.state == "FINISHED", r.start_time)
        if old is None or rank > (old.state == "FINISHED", old.start_time):
            best[key] = r
    kept = [r for r in runs if r in best.values()]
    return kept, len(runs) - len(kept)


def _find_run(client, run_id: str, uri: str):
    """(experiment, run) for a run id in any active experiment of the store."""
    experiments = {e.experiment_id: e for e in _pages(client.search_experiments)}
    found = []
    if RUN_ID.match(run_id) and experiments:
        found = _search(client, experiments, f"attributes.run_id = '{run_id}'")
        if not found:  # the first characters of an id, as result lines print them
            try:
                run = tracking.get_run(client, run_id)
            except ConfigError as e:
                raise ReportError(str(e).replace("RUN_ID:", "--sweep:", 1)) from None
            found = ([RunRecord.from_run(run)] if run is not None
                     and run.info.experiment_id in experiments else [])
    if not found:
        latest = []
        if experiments:
            latest = client.search_runs(list(experiments), f"tags.{SWEEP_TAG} = 'true'",
                                        order_by=["attributes.start_time DESC"], max_results=3)
        known = ", ".join(f"{r.info.run_id} ({r.info.run_name})" for r in latest)
        raise ReportError(f"--sweep: unknown run id {run_id!r} in {uri}; "
                          + (f"latest sweeps: {known}" if known else "it holds no sweeps"))
    return experiments[found[0].experiment_id], found[0]


def select(client, uri: str, experiment: Optional[str], sweep: Optional[str]) -> Selection:
    """The runs to report: a sweep's children (given or the latest) or a whole experiment."""
    if sweep is not None:
        exp, parent = _find_run(client, sweep, uri)
        if experiment is not None and exp.name != experiment:
            raise ReportError(f"--sweep: run {sweep!r} belongs to experiment {exp.name!r}, "
                              f"not {experiment!r}")
        sweep = parent.run_id  # the full id when a prefix was given
        runs = _children(client, exp.experiment_id, sweep, parent.tags)
        if not runs:
            raise ReportError(f"--sweep: run {sweep!r} has no child runs (a sweep run carries "
                              f"the tag {SWEEP_TAG}=true and its jobs point to it)")
        return Selection(uri, exp.experiment_id, exp.name, runs, parent)
    if experiment is not None:
        exp = _experiment(client, experiment, uri)
        runs = [r for r in _search(client, [exp.experiment_id])
                if r.tags.get(SWEEP_TAG) != "true"]
        if not runs:
            raise ReportError(f"EXPERIMENT: experiment {experiment!r} has no runs in {uri}")
        return Selection(uri, exp.experiment_id, exp.name, runs)
    # the latest sweep of the whole store: `gdexp run experiment=lr_regimes && gdexp report`
    # reports that preset's sweep, which lives in an experiment of its own name
    experiments = {e.experiment_id: e for e in _pages(client.search_experiments)}
    latest = []
    if experiments:
        latest = client.search_runs(list(experiments), f"tags.{SWEEP_TAG} = 'true'",
                                    order_by=["attributes.start_time DESC"], max_results=1)
    if not latest:
        raise ReportError(f"no sweep found in {uri}; run one with `gdexp run -m key=a,b` "
                          "(or a sweeping preset), or name an EXPERIMENT or --sweep ID")
    parent = RunRecord.from_run(latest[0])
    exp = experiments[parent.experiment_id]
    runs = _children(client, exp.experiment_id, parent.run_id, parent.tags)
    if not runs:
        raise ReportError(f"the latest sweep {parent.run_id} ({parent.name}) has no runs yet")
    return Selection(uri, exp.experiment_id, exp.name, runs, parent)


# ---------------------------------------------------------------- the table

MISSING = None


NULL = ("", "None", "null")  # how a param of no value reads back from the store


def _number(value) -> Optional[float]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _all_keys(runs: list[RunRecord]) -> list[str]:
    order: dict[str, None] = {}
    for r in runs:
        order.update(dict.fromkeys(r.params))
    return [k for k in order if not k.startswith(IGNORED_PREFIXES)]


def varying_keys(runs: list[RunRecord]) -> list[str]:
    """Params taking more than one value across the runs, in config order, repeats last.

    A param that only some runs have (``optimizer.momentum`` next to plain gd) follows from
    another choice; it varies only if the runs that have it disagree. Seeds go last so that
    the repeats of one setting sit together.
    """
    keys = [k for k in _all_keys(runs) if len({r.params[k] for r in runs if k in r.params}) > 1]
    return sorted(keys, key=lambda k: k in REPEAT_KEYS)


def sort_runs(runs: list[RunRecord], keys: list[str]) -> list[RunRecord]:
    """Sorted by each key in turn: numerically when every present value is a number (a null,
    e.g. the full batch's ``data.batch_size``, after the numbers)."""
    numeric = {k: all(_number(r.params[k]) is not None for r in runs
                      if r.params.get(k, "") not in NULL) for k in keys}

    def key(r: RunRecord):
        out = []
        for k in keys:
            v = r.params.get(k, MISSING)
            if v is MISSING or v in NULL:
                out.append((1, 0.0, ""))
            elif numeric[k]:
                out.append((0, _number(v), ""))
            else:
                out.append((0, 0.0, v))
        return out + [r.start_time, r.run_id]

    return sorted(runs, key=key)


@dataclass
class Table:
    """Column names and, per run, raw cells (CSV) and display cells (terminal, markdown)."""

    columns: list
    raw: list
    shown: list
    numeric: list


_fmt_number = formatting.number


def _fmt_param(value: str) -> str:
    """A numeric param to 6 significant digits (lr 0.181818, not 0.1818181818181818)."""
    x = _number(value)
    if x is None or value.strip().lower() in ("true", "false"):
        return value if value != "" else "-"
    return _fmt_number(x, 6)


def build_table(runs: list[RunRecord], keys: list[str]) -> Table:
    """Varying params first, then the fixed summary columns, then the run id."""
    fixed = [(name, param) for name, param in PARAM_COLUMNS if param not in keys]
    art = [t for t in ART_TARGETS if any(f"aRT.{t}" in r.metrics for r in runs)]
    columns = (list(keys) + [name for name, _ in fixed] + list(RESULT_COLUMNS)
               + [f"aRT({t})" for t in art] + ["run_id"])
    raw, shown = [], []
    for r in runs:
        params = [r.params.get(k, "") for k in keys] + [r.params.get(p, "") for _, p in fixed]
        results = [r.status, r.tags.get("stop_rule", ""), r.steps, r.final_loss,
                   r.tags.get("basin", "")]
        # a run that never reached a target has no finite aRT (it is not logged): "inf"
        runtimes = [r.metrics.get(f"aRT.{t}", math.inf) for t in art]
        raw.append(params + [_raw(v) for v in results + runtimes] + [r.run_id])
        shown.append([_fmt_param(v) for v in params]
                     + [results[0], results[1] or "-", _fmt_number(results[2]),
                        _fmt_number(results[3]), results[4] or "-"]
                     + [_fmt_number(v) for v in runtimes] + [r.run_id[:8]])
    numeric = [all(_is_number(row[i]) for row in raw if row[i] not in NULL)
               and any(row[i] not in NULL for row in raw) for i in range(len(columns))]
    numeric[-1] = False
    return Table(columns, raw, shown, numeric)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _raw(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def format_text(table: Table) -> str:
    """Aligned plain text: numbers right-aligned, words left-aligned."""
    widths = [max(len(c), *(len(row[i]) for row in table.shown))
              for i, c in enumerate(table.columns)]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, table.numeric)).rstrip()

    return "\n".join([line(table.columns), line(["-" * w for w in widths])]
                     + [line(row) for row in table.shown])


def format_markdown(table: Table) -> str:
    def cells(values):
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    align = ["---:" if num else ":---" for num in table.numeric]
    return "\n".join([cells(table.columns), "| " + " | ".join(align) + " |"]
                     + [cells(row) for row in table.shown])


def write_csv(table: Table, path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(table.columns)
        w.writerows(table.raw)
    return path


def common_params(runs: list[RunRecord], keys: list[str]) -> dict[str, tuple[str, int]]:
    """Params with one value wherever they are set: key -> (value, number of runs having it)."""
    out = {}
    for k in _all_keys(runs):
        if k not in keys:
            having = [r.params[k] for r in runs if k in r.params]
            out[k] = (having[0], len(having))
    return out


def claim_table(runs: list[RunRecord]) -> Optional[Table]:
    """The claim rows the runs checked (see claims.evaluate), paper next to measured, one row
    per run and claim row; None when no run checked a claim."""
    rows = []
    for r in runs:
        for tag in sorted(r.tags):
            if not (tag.startswith("claim.") and tag.endswith(".held")) or tag == "claim.held":
                continue
            key = tag[len("claim."):-len(".held")]
            paper, measured = (r.metrics.get(f"claim.{key}.{k}") for k in ("paper", "measured"))
            words = [r.tags[tag], r.tags.get(f"claim.{key}.statement", "")]
            rows.append(([r.name, key, _raw(paper), _raw(measured), *words],
                         [r.name, key, _fmt_number(paper), _fmt_number(measured), *words]))
    if not rows:
        return None
    return Table(["run", "claim row", "paper", "measured", "held", "statement"],
                 [raw for raw, _ in rows], [shown for _, shown in rows],
                 [False, False, True, True, False, False])


def write_markdown(sel: Selection, table: Table, keys: list[str], figures: list[Path],
                   path: Path, claims: Optional[Table] = None) -> Path:
    lines = [f"# Report: {sel.title}", "", f"{sel.description}.", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; "
             f"runs table: {tracking.ui_links(sel.uri, sel.experiment_id)}", "",
             "## Runs", "", format_markdown(table), ""]
    if claims is not None:
        lines += ["## Claims (published number next to the measured one)", "",
                  format_markdown(claims), ""]
    common = common_params(sel.runs, keys)
    if common:
        total = len(sel.runs)
        lines += ["## Settings common to the runs", ""]
        lines += [f"- `{k}` = `{v}`" + ("" if n == total else f" (the {n} of {total} runs "
                                                            "that have it)")
                  for k, (v, n) in common.items()]
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}]({p.name})\n" for p in figures]
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------- figures

def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key shares: optimizer.lr -> lr;
    a group's choice is named by the group: optimizer.name -> optimizer."""
    out = {}
    for k in keys:
        parts = k.split(".")
        if len(parts) == 2 and parts[1] == "name":
            out[k] = parts[0]
            continue
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(o == suffix or o.endswith("." + suffix) for o in keys) == 1:
                out[k] = suffix
                break
        else:
            out[k] = k
    return out


# A report's loss figure names up to this many runs in its legend when they differ in more
# than their rate (a colour scale by rate would hide, e.g., the batch sizes of an SGD sweep).
REPORT_LEGEND = 16


def _lr_values(runs: list[RunRecord], keys: list[str]) -> Optional[list[float]]:
    """Each run's learning rate, to colour its line by, when the rate varies and there are
    more runs than a legend holds (runs that differ in other params too, e.g. their seeds,
    share their rate's colour); else None (a legend names the lines)."""
    from .plots import MAX_LEGEND

    if "optimizer.lr" not in keys or len(runs) <= MAX_LEGEND:
        return None
    others = [k for k in keys if k != "optimizer.lr" and k not in REPEAT_KEYS]
    if others and len(runs) <= REPORT_LEGEND:
        return None
    rates = [_number(r.params.get("optimizer.lr", "")) for r in runs]
    return None if any(v is None for v in rates) else [float(v) for v in rates]


def run_labels(runs: list[RunRecord], keys: list[str]) -> list[str]:
    """Legend labels from the varying params (``lr=0.1, optimizer=gd``); run names otherwise."""
    if not keys:
        return [r.name for r in runs]
    short = short_names(keys)
    columns = []
    for k in keys:
        values = [r.params.get(k, "-") for r in runs]
        numbers = [_number(v) for v in values]
        if all(x is not None for x in numbers) and not any(
                v.strip().lower() in ("true", "false") for v in values):
            columns.append(formatting.distinct(numbers))  # short, yet never two as one
        else:
            columns.append([_fmt_param(v) for v in values])
    # a param a run does not have (eps of an optimizer without one) is left out of its label
    return [", ".join(f"{short[k]}={column[i]}" for k, column in zip(keys, columns)
                      if k in r.params) or r.name
            for i, r in enumerate(runs)]


def curve_labels(runs: list[RunRecord], keys: list[str]) -> list[str]:
    """Legend labels of the runs' logged loss curves: a run of many starts (or rates) logs
    their median, and says so."""
    return [f"{label} (median over its starts)" if "loss_best" in r.metrics else label
            for label, r in zip(run_labels(runs, keys), runs)]


def _history(client, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    if not points:
        return np.empty(0), np.empty(0)
    steps, values = (np.asarray(a, dtype=float) for a in zip(*points))
    return steps, values


def metric_curves(client, runs: list[RunRecord], keys=("loss", "grad_norm")):
    """(grid, [values per key]): each run's logged curves on one common step grid.

    Long runs log thinned curves at their own steps; each run is interpolated onto the union
    of all logged steps, inside its own range only (NaN before its first and after its last).
    """
    histories = [[_history(client, r.run_id, key) for key in keys] for r in runs]
    all_steps = [h[0][0] for h in histories if h[0][0].size]
    if not all_steps:
        return None
    grid = np.unique(np.concatenate(all_steps))
    if grid.size > MAX_CURVE_GRID:
        grid = np.unique(np.interp(np.linspace(0, grid.size - 1, MAX_CURVE_GRID),
                                   np.arange(grid.size), grid).round())
    out = [np.full((grid.size, len(runs)), np.nan) for _ in keys]
    for j, per_key in enumerate(histories):
        for (steps, values), arr in zip(per_key, out):
            if steps.size:
                inside = (grid >= steps[0]) & (grid <= steps[-1])
                arr[inside, j] = np.interp(grid[inside], steps, values)
    return grid, out


class Artifacts:
    """Per-run artifacts downloaded once into a temporary folder."""

    def __init__(self, client, folder: Path):
        self.client, self.folder = client, folder

    def get(self, run_id: str, name: str) -> Path:
        dst = self.folder / run_id
        local = dst / name
        if not local.exists():
            dst.mkdir(parents=True, exist_ok=True)
            local = Path(self.client.download_artifacts(run_id, name, str(dst)))
        return local


def _note(message: str) -> None:
    print(f"gdexp report: note: {message}", file=sys.stderr)


def objective_groups(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs grouped by their objective.* params (same objective, same contour)."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        key = json.dumps({k: v for k, v in r.params.items() if k.startswith("objective.")},
                         sort_keys=True)
        groups.setdefault(key, []).append(r)
    return groups


def rebuild_objective(artifacts: Artifacts, run: RunRecord):
    """The run's Objective, from its config.yaml through the registry (nothing is imported)."""
    from .reproduce import read_config, to_dictconfig  # the one guarded reader of logged YAML

    path = artifacts.get(run.run_id, "config.yaml")
    return config.build_objective(to_dictconfig(read_config(path.read_text(), str(path))))


def make_figures(client, sel: Selection, runs: list[RunRecord], keys: list[str],
                 out_dir: Path, tmp: Path) -> list[Path]:
    """Loss curves, outcome vs learning rate (when it varies), contours with paths (2-D)."""
    from . import plots

    artifacts = Artifacts(client, tmp)
    objectives = {}
    # runs with results only: a failed or unfinished run has no trace or config to draw
    groups = objective_groups([r for r in runs if r.steps is not None])
    for key, group in groups.items():
        try:
            objectives[key] = (rebuild_objective(artifacts, group[0]), group)
        except Exception as e:  # an old or foreign run: report it, draw the rest
            _note(f"cannot rebuild the objective of run {group[0].run_id} ({e})")
    key_of = {r.run_id: key for key, group in groups.items() for r in group}

    def f_min(group: list[RunRecord]) -> Optional[float]:
        """The known minimum value when every run of ``group`` shares one rebuilt objective."""
        keys_seen = {key_of[r.run_id] for r in group if r.run_id in key_of}
        if len(keys_seen) != 1 or next(iter(keys_seen)) not in objectives:
            return None
        objective = objectives[next(iter(keys_seen))][0]
        return objective.f_min if objective.global_minima else None

    figures = []
    # one loss figure per objective: values of different functions share no scale
    curve_groups = list(groups.values()) if len(groups) > 1 else [runs]
    for i, group in enumerate(curve_groups):
        data = metric_curves(client, group)
        if data is None:
            continue
        grid, (loss, grad_norm) = data
        name, what = FILES["curves"], ""
        if len(curve_groups) > 1:
            objective = group[0].params.get("objective.name", "objective")
            name = f"{Path(name).stem}-{i + 1}-{_slug(objective)}.png"
            what = f", {objective}"
        varying = varying_keys(group)
        figures.append(plots.curves(grid, loss, grad_norm, out_dir / name,
                                    labels=curve_labels(group, varying),
                                    f_min=f_min(group), title=f"{sel.title}: loss per run{what}",
                                    diverged=[r.status == "diverged" for r in group],
                                    values=_lr_values(group, varying),
                                    max_legend=REPORT_LEGEND))
        # the first-order Taylor check, where the diagnostics logged it
        taylor = metric_curves(client, group, ("taylor_ratio",))
        if taylor is not None and np.isfinite(taylor[1][0]).any():
            stem = Path(FILES["taylor"]).stem + ("" if len(curve_groups) == 1 else f"-{i + 1}")
            figures.append(plots.taylor_ratio(
                taylor[0], taylor[1][0], out_dir / f"{stem}.png",
                labels=run_labels(group, varying_keys(group)),
                title=f"{sel.title}: actual / first-order decrease{what}"))
    if "optimizer.lr" in keys:
        figures += _lr_figures(plots, runs, keys, out_dir, sel, f_min)
    figures += _sharpness_figures(artifacts, runs, out_dir)
    flat = [(objective, group) for objective, group in objectives.values() if objective.dim == 2]
    for i, (objective, group) in enumerate(flat):
        # labelled by what varies among the runs drawn together
        label_of = dict(zip((r.run_id for r in group), run_labels(group, varying_keys(group))))
        paths, path_labels, rates = [], [], []   # per run: its (p, 2, n) path array
        for r in group:
            try:
                with np.load(artifacts.get(r.run_id, "trace.npz")) as trace:
                    paths.append(np.asarray(trace["path"], dtype=float))
                    rates.append(np.broadcast_to(np.asarray(
                        trace["base_lr"] if "base_lr" in trace else np.nan, dtype=float),
                        paths[-1].shape[2:]))
                path_labels.append(label_of[r.run_id])
            except Exception as e:  # a run that failed before writing its trace
                _note(f"no path for run {r.run_id} ({e})")
        if not paths:
            continue
        name = FILES["paths"] + ("" if len(flat) == 1 else f"-{i + 1}-{_slug(objective.name)}")
        title = f"{sel.title}: {objective.name}, paths"
        # every start's path, coloured by run
        lines = [p[:, :, j] for p in paths for j in range(p.shape[2])]
        groups = [i for i, p in enumerate(paths) for _ in range(p.shape[2])]
        # rates a legend cannot name (too many runs, or several in one run): a colour scale
        lr = np.concatenate(rates)
        by_lr = (np.isfinite(lr).all() and np.unique(lr).size > 1
                 and (len(paths) > plots.MAX_LEGEND
                      or any(np.unique(r).size > 1 for r in rates)))
        figures.append(plots.contour_paths(objective, lines, out_dir / f"{name}.png",
                                           labels=path_labels, title=title, groups=groups,
                                           values=lr if by_lr else None))
    return figures


MAX_SHARPNESS_FIGURES = 10


def _sharpness_figures(artifacts: Artifacts, runs: list[RunRecord], out_dir: Path) -> list[Path]:
    """Each run's own sharpness figure (its sharpness with each threshold, and the loss), for
    the runs that recorded a sharpness curve and kept their plots (the first ten)."""
    figures = []
    for r in [r for r in runs if "sharpness_x0" in r.metrics][:MAX_SHARPNESS_FIGURES]:
        try:
            src = artifacts.get(r.run_id, "plots/sharpness.png")
        except Exception:  # noqa: BLE001 - tracking.plots=false, or more starts than it draws
            continue
        dst = out_dir / f"sharpness-{_slug(r.name)}.png"
        shutil.copyfile(src, dst)
        figures.append(dst)
    return figures


def _lr_figures(plots, runs, keys, out_dir, sel, f_min) -> list[Path]:
    """Outcome vs lr, one figure per combination of the other varying params (seeds pooled)."""
    if not all(_number(r.params.get("optimizer.lr")) is not None for r in runs):
        return []  # an lr list inside one run: no single rate per run
    runs = [r for r in runs if r.steps is not None]  # a failed run has no outcome to place
    others = [k for k in keys if k != "optimizer.lr" and k not in REPEAT_KEYS]
    groups: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(tuple(r.params.get(k, "-") for k in others), []).append(r)
    if len(groups) > MAX_LR_FIGURES:
        groups = {(): runs}
    short = short_names(others)
    figures, used = [], set()
    for i, (values, group) in enumerate(groups.items()):
        what = ", ".join(f"{short[k]}={v}" for k, v in zip(others, values))
        name = FILES["lr"]
        if len(groups) > 1:
            name += "-" + (_slug(what.replace(", ", "_")) or str(i + 1))
            name = name if name not in used else f"{name}-{i + 1}"
            used.add(name)
        figures.append(plots.outcome_vs_lr(
            [_number(r.params["optimizer.lr"]) for r in group],
            [r.steps if r.steps is not None else np.nan for r in group],
            [r.final_loss if r.final_loss is not None else np.nan for r in group],
            [r.status for r in group], out_dir / f"{name}.png", f_min=f_min(group),
            title=f"{sel.title}: outcome vs lr" + (f"\n{what}" if what else "")))
    return figures


# ---------------------------------------------------------------- the command

def output_dir(out: Optional[str], sel: Selection) -> Path:
    if out:
        path = Path(out).expanduser().resolve()
    else:
        base = config.outputs_dir() / "reports" / f"{sel.label}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, k = base, 1
        while path.exists():  # two reports in the same second
            k += 1
            path = base.with_name(f"{base.name}-{k}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"--out: cannot create {str(path)!r} ({e.strerror})") from None
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gdexp report",
        description="Tabulate and plot runs read back from MLflow: by default the latest sweep "
                    "in the store, whichever experiment it is in. A sweep's report is also logged "
                    f"onto its sweep run under {ARTIFACT_DIR}/.")
    p.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                   help="report every run of this experiment (sweep runs themselves excluded)")
    p.add_argument("--sweep", metavar="PARENT_RUN_ID",
                   help="report the runs of this sweep run")
    p.add_argument("--uri", metavar="URI",
                   help="MLflow tracking URI (default: the store under outputs/)")
    p.add_argument("--out", metavar="DIR",
                   help="folder for the files (default: outputs/reports/<sweep or "
                        "experiment>-<timestamp>/)")
    return p


def report(args, out=None) -> Path:
    out = sys.stdout if out is None else out
    uri, client = open_store(args.uri)
    sel = select(client, uri, args.experiment, args.sweep)
    sel.runs, repeats = one_per_config(sel.runs)
    keys = varying_keys(sel.runs)
    runs = sort_runs(sel.runs, keys)
    sel.runs = runs
    table = build_table(runs, keys)
    print(sel.description, file=out)
    if repeats:
        print(f"(one run per config: {repeats} earlier run{'s' if repeats != 1 else ''} of "
              "the same configs left out)", file=out)
    print(file=out)
    print(format_text(table), file=out)
    print(file=out, flush=True)
    claims = claim_table(runs)
    if claims is not None:
        print(format_text(claims), file=out)
        print(file=out, flush=True)

    out_dir = output_dir(args.out, sel)
    with tempfile.TemporaryDirectory(prefix="gdexp-report-") as tmp:
        figures = make_figures(client, sel, runs, keys, out_dir, Path(tmp))
    files = [write_csv(table, out_dir / FILES["csv"]),
             write_markdown(sel, table, keys, figures, out_dir / FILES["markdown"], claims),
             *figures]
    print(f"wrote {out_dir}/: {', '.join(p.name for p in files)}", file=out)
    if sel.parent is not None:
        for p in files:
            client.log_artifact(sel.parent.run_id, str(p), artifact_path=ARTIFACT_DIR)
        print(f"logged under {ARTIFACT_DIR}/ of sweep run {sel.parent.run_id}", file=out)
    sweep = sel.parent.run_id if sel.parent is not None else None
    tracking.ensure_view(client, sel.experiment_id, sweep=sweep,
                         tags=client.get_experiment(sel.experiment_id).tags)
    print(f"  view: {tracking.ui_links(uri, sel.experiment_id, sweep=sweep)}"
          f"{tracking.ui_hint(uri)}", file=out)
    if sweep is not None:
        print(f"  sweep run (the report under {ARTIFACT_DIR}/): "
              f"{tracking.ui_links(uri, sel.experiment_id, sweep)}", file=out)
    return out_dir


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    try:
        report(args)
    except ReportError as e:
        print(f"gdexp report: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a full disk, a store failing midway: one line
        line = tracking.explain(e, tracking.resolve_uri(args.uri))
        if line is None:
            raise
        print(f"gdexp report: error: {line}", file=sys.stderr)
        return getattr(e, "code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
