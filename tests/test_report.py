"""`gdexp report` on a real sweep: table, CSV, markdown, figures, artifacts on the sweep run."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gdexp.report import (RunRecord, build_table, format_text, main, run_labels,
                          short_names, sort_runs, varying_keys)

# lr 0.25 > 2/λmax = 0.2 on the default quadratic (λ = 1, 10): that run diverges.
SWEEP = ("-m", "optimizer.lr=0.05,0.1,0.25", "tracking.plots=false", "stop.max_steps=300")
SINGLE = ("optimizer.lr=0.02", "tracking.plots=false", "stop.max_steps=50")
EXPECTED = {"0.05": "converged", "0.1": "converged", "0.25": "diverged"}
FIGURES = {"loss_curves.png", "outcome_vs_lr.png", "paths.png", "taylor_ratio.png"}
REPORT_FILES = {"runs.csv", "runs.md"} | FIGURES


def _run(argv: list[str], outputs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                          timeout=600)


def gdexp_run(*args: str, outputs: Path) -> subprocess.CompletedProcess:
    proc = _run(["-m", "gdexp", "run", *args], outputs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def gdexp_report(*args: str, outputs: Path) -> subprocess.CompletedProcess:
    """`gdexp report ARGS` in a subprocess."""
    return _run(["-m", "gdexp", "report", *args], outputs)


@pytest.fixture
def report_here(monkeypatch, capsys):
    """`gdexp report ARGS` in this process (mlflow is imported once): the error cases."""
    def call(*args: str, outputs: Path):
        monkeypatch.setenv("GDEXP_OUTPUTS", str(outputs))
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)
    return call


def client(outputs: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding one plain run, then a 3-run lr sweep; and the report asked in between."""
    outputs = tmp_path_factory.mktemp("report") / "outputs"
    gdexp_run(*SINGLE, outputs=outputs)
    before_sweep = gdexp_report(outputs=outputs)
    gdexp_run(*SWEEP, outputs=outputs)
    mlflow = client(outputs)
    experiment = mlflow.get_experiment_by_name("gdexp")
    parents = mlflow.search_runs([experiment.experiment_id], "tags.`gdexp.sweep` = 'true'")
    assert len(parents) == 1
    parent = parents[0].info.run_id
    children = mlflow.search_runs([experiment.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    report = gdexp_report(outputs=outputs)
    assert report.returncode == 0, report.stdout + report.stderr
    return SimpleNamespace(outputs=outputs, client=mlflow, parent=parent,
                           children={r.info.run_id for r in children},
                           before_sweep=before_sweep, report=report)


def table_rows(stdout: str) -> list[list[str]]:
    """The printed table: header, then one list of cells per run (the dashes line dropped)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("optimizer.lr "))
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    assert set(rows[1][0]) == {"-"}
    return [rows[0]] + rows[2:]


def written_dir(stdout: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith("wrote "))
    return Path(line[len("wrote "):].split(": ")[0])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_png(path: Path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10


def assert_one_line_error(proc, *parts: str):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdexp report: error: "), proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]


# ---------------------------------------------------------------- the default: latest sweep

def test_the_terminal_table_lists_the_sweep_runs_with_their_status(store):
    out = store.report.stdout
    assert f"sweep {store.parent}" in out and "3 runs" in out
    header, *rows = table_rows(out)
    assert header[:2] == ["optimizer.lr", "objective"]
    assert "lr" not in header  # the varying lr leads the table, not repeated
    status = header.index("status")
    assert [(r[0], r[status]) for r in rows] == list(EXPECTED.items())  # sorted by lr
    assert {r[-1] for r in rows} == {run_id[:8] for run_id in store.children}


def test_the_csv_and_markdown_hold_the_table(store):
    folder = written_dir(store.report.stdout)
    assert folder.parent == store.outputs / "reports"
    assert folder.name.startswith(f"sweep-{store.parent[:8]}-")
    rows = read_csv(folder / "runs.csv")
    assert {r["optimizer.lr"]: r["status"] for r in rows} == EXPECTED
    assert {r["run_id"] for r in rows} == store.children
    diverged = next(r for r in rows if r["optimizer.lr"] == "0.25")
    assert diverged["stop_rule"] == "diverge_above" and diverged["basin"] == "none"
    assert float(diverged["final_loss"]) > 1e6 and int(diverged["steps"]) < 300
    for r in rows:
        if r["status"] == "converged":
            assert float(r["final_loss"]) < 1e-9 and r["basin"] == "global"
    md = (folder / "runs.md").read_text()
    assert "| optimizer.lr | objective |" in md
    assert md.count("| converged |") == 2 and md.count("| diverged |") == 1
    assert "- `stop.max_steps` = `300`" in md
    for name in FIGURES:
        assert f"]({name})" in md


def test_the_figures_are_valid_images(store):
    folder = written_dir(store.report.stdout)
    assert {p.name for p in folder.iterdir()} == REPORT_FILES
    for name in FIGURES:
        assert_png(folder / name)


def test_the_report_is_logged_onto_the_sweep_run(store, tmp_path):
    logged = {a.path for a in store.client.list_artifacts(store.parent, "report")}
    assert logged == {f"report/{name}" for name in REPORT_FILES}
    local = store.client.download_artifacts(store.parent, "report/runs.csv", str(tmp_path))
    folder = written_dir(store.report.stdout)
    assert Path(local).read_text() == (folder / "runs.csv").read_text()
    out = store.report.stdout
    assert f"logged under report/ of sweep run {store.parent}" in out
    experiment_id = store.client.get_run(store.parent).info.experiment_id
    assert f"/#/experiments/{experiment_id}/runs/{store.parent}" in out


# ---------------------------------------------------------------- --sweep and EXPERIMENT

def test_sweep_by_id_into_a_chosen_folder(store, tmp_path):
    proc = gdexp_report("--sweep", store.parent, "--out", str(tmp_path / "rep"),
                        outputs=store.outputs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert written_dir(proc.stdout) == tmp_path / "rep"
    rows = read_csv(tmp_path / "rep" / "runs.csv")
    assert {r["run_id"] for r in rows} == store.children
    assert {p.name for p in (tmp_path / "rep").iterdir()} == REPORT_FILES


def test_sweep_by_the_id_prefix_a_result_line_prints(store, tmp_path):
    proc = gdexp_report("--sweep", store.parent[:8], "--out", str(tmp_path / "rep"),
                        outputs=store.outputs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"sweep {store.parent} " in proc.stdout
    assert {r["run_id"] for r in read_csv(tmp_path / "rep" / "runs.csv")} == store.children


def test_experiment_report_covers_every_run_but_the_sweep_run(store, tmp_path):
    before = {a.path for a in store.client.list_artifacts(store.parent, "report")}
    proc = gdexp_report("gdexp", "--out", str(tmp_path / "exp"), outputs=store.outputs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_csv(tmp_path / "exp" / "runs.csv")
    assert store.parent not in {r["run_id"] for r in rows}
    assert len(rows) == 4 and store.children < {r["run_id"] for r in rows}
    # what differs: the lr and the step budget; sorted by the lr, numerically
    assert list(rows[0])[:2] == ["optimizer.lr", "stop.max_steps"]
    assert [r["optimizer.lr"] for r in rows] == ["0.02", "0.05", "0.1", "0.25"]
    assert [r["stop.max_steps"] for r in rows] == ["50", "300", "300", "300"]
    header, *printed = table_rows(proc.stdout)
    assert len(printed) == 4
    assert "logged under" not in proc.stdout
    assert "/#/experiments/" in proc.stdout
    # one outcome-vs-lr figure per step budget
    by_budget = {"outcome_vs_lr-max_steps=50.png", "outcome_vs_lr-max_steps=300.png"}
    assert {p.name for p in (tmp_path / "exp").iterdir()} == \
        {"runs.csv", "runs.md", "loss_curves.png", "paths.png", "taylor_ratio.png"} | by_budget
    for name in by_budget | {"loss_curves.png", "paths.png"}:
        assert_png(tmp_path / "exp" / name)
    assert {a.path for a in store.client.list_artifacts(store.parent, "report")} == before


# ---------------------------------------------------------------- errors

def test_no_sweep_yet(store):
    assert_one_line_error(store.before_sweep, "no sweep found", "mlflow.db", "gdexp run -m")


def test_unknown_experiment(store, report_here):
    proc = report_here("nope", outputs=store.outputs)
    assert_one_line_error(proc, "EXPERIMENT", "unknown experiment 'nope'", "available:", "gdexp")


def test_unknown_run_id(store, report_here):
    proc = report_here("--sweep", "0123456789abcdef", outputs=store.outputs)
    assert_one_line_error(proc, "--sweep", "unknown run id '0123456789abcdef'", store.parent)
    proc = report_here("--sweep", "x' or '1'='1", outputs=store.outputs)
    assert_one_line_error(proc, "--sweep", "unknown run id")


def test_a_run_without_children_is_no_sweep(store, report_here):
    child = sorted(store.children)[0]
    proc = report_here("--sweep", child, outputs=store.outputs)
    assert_one_line_error(proc, "--sweep", child, "no child runs")


def test_an_empty_outputs_folder_has_no_store_and_gets_none(tmp_path):
    proc = gdexp_report(outputs=tmp_path / "empty")
    assert_one_line_error(proc, "no MLflow store", str(tmp_path / "empty" / "mlflow.db"))
    assert not (tmp_path / "empty").exists()


def test_usage_errors(tmp_path, report_here):
    proc = report_here("--uri", "sqlite:///relative.db", outputs=tmp_path)
    assert_one_line_error(proc, "--uri", "absolute")
    proc = report_here("--bogus", outputs=tmp_path)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


# ---------------------------------------------------------------- the table, in process

def record(run_id, **params):
    return RunRecord(run_id, run_id, "FINISHED", params=params,
                     tags={"status": "converged", "stop_rule": "grad_tol", "basin": "global"},
                     metrics={"steps": 10.0, "final_loss": 1e-12})


def test_varying_params_lead_and_sort_numerically():
    runs = [record("a", seed="1", **{"optimizer.lr": "0.5", "optimizer.name": "gd"}),
            record("b", seed="0", **{"optimizer.lr": "0.05", "optimizer.name": "gd"}),
            record("c", seed="0", **{"optimizer.lr": "1e-3", "optimizer.name": "momentum",
                                     "optimizer.momentum": "0.9"}),
            record("d", seed="0", **{"optimizer.lr": "0.5", "optimizer.name": "gd",
                                     "tracking.plots": "true"})]
    keys = varying_keys(runs)
    # momentum exists for one run only (it follows from the optimizer); tracking is ignored;
    # the seed, a repeat, goes last
    assert keys == ["optimizer.lr", "optimizer.name", "seed"]
    ordered = sort_runs(runs, keys)
    assert [r.run_id for r in ordered] == ["c", "b", "d", "a"]
    table = build_table(ordered, keys)
    assert table.columns[:4] == ["optimizer.lr", "optimizer.name", "seed", "objective"]
    assert "optimizer" not in table.columns and "lr" not in table.columns
    text = format_text(table).splitlines()
    assert len({len(line) for line in text[:2]}) == 1  # header and rule aligned
    assert text[2].split()[:3] == ["0.001", "momentum", "0"]  # numbers formatted alike
    assert text[2].index("0.001") + 5 == text[1].index("  ")  # numbers right-aligned


def test_runs_still_descending_are_not_taken_for_repeats():
    from gdexp.report import one_per_config

    # a sweep's running jobs have logged no params yet: each stays, none "left out"
    running = [RunRecord(f"r{i}", f"r{i}", "RUNNING", params={}) for i in range(3)]
    done = [record("a", **{"optimizer.lr": "0.1"}), record("b", **{"optimizer.lr": "0.1"})]
    kept, left_out = one_per_config(running + done)
    assert [r.run_id for r in kept][:3] == ["r0", "r1", "r2"] and len(kept) == 4
    assert left_out == 1  # one of the two finished runs of one config


def test_a_run_of_many_starts_says_its_curve_is_their_median():
    from gdexp.report import curve_labels

    one, many = record("a", seed="0"), record("b", seed="1")
    many.metrics["loss_best"] = 1e-9  # logged by a run of several starts beside the median
    assert curve_labels([one, many], ["seed"]) == ["seed=0", "seed=1 (median over its starts)"]


def test_a_null_sorts_after_the_numbers_of_its_column():
    # data.batch_size: 32, 4 and the full batch (null)
    runs = [record(n, **{"data.batch_size": v}) for n, v in (("a", "32"), ("b", "null"),
                                                             ("c", "4"))]
    ordered = sort_runs(runs, ["data.batch_size"])
    assert [r.run_id for r in ordered] == ["c", "a", "b"]
    table = build_table(ordered, ["data.batch_size"])
    assert table.numeric[0]  # right-aligned like the numbers it holds


def test_labels_name_only_what_varies():
    assert short_names(["optimizer.lr", "optimizer.name", "objective.name", "a.dim", "b.dim"]) \
        == {"optimizer.lr": "lr", "optimizer.name": "optimizer", "objective.name": "objective",
            "a.dim": "a.dim", "b.dim": "b.dim"}
    runs = [record("a", **{"optimizer.lr": "0.1"}), record("b", **{"optimizer.lr": "0.2"})]
    assert run_labels(runs, ["optimizer.lr"]) == ["lr=0.1", "lr=0.2"]
    assert run_labels(runs, []) == ["a", "b"]
    # rates to the fewest digits (at least 3) that keep them apart, as in the legends
    runs = [record(n, **{"optimizer.lr": v, "optimizer.name": "gd"})
            for n, v in (("a", "0.01"), ("b", repr(2 / 11)), ("c", "0.195"), ("d", "0.1951"))]
    assert run_labels(runs, ["optimizer.lr", "optimizer.name"]) == [
        "lr=0.01, optimizer=gd", "lr=0.1818, optimizer=gd", "lr=0.195, optimizer=gd",
        "lr=0.1951, optimizer=gd"]
    # a param one run does not have (adam's eps beside gd) is left out of its label
    runs = [record("a", **{"optimizer.name": "gd"}),
            record("b", **{"optimizer.name": "adam", "optimizer.eps": "1e-08"})]
    assert run_labels(runs, ["optimizer.eps", "optimizer.name"]) == [
        "optimizer=gd", "eps=1e-08, optimizer=adam"]


def test_the_report_figures_keep_the_diverged_run_off_the_axes(store, report_here,
                                                               monkeypatch, tmp_path):
    """lr 0.25 diverges: its loss must not set the loss axis, its path must stay in the
    window, and the legend sits below the axes with the rates as the table writes them."""
    from gdexp import plots

    seen, save = {}, plots._save

    def keep(fig, path):
        seen[Path(path).name] = (
            [ax.get_ylim() for ax in fig.axes],
            [np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
             for line in fig.axes[0].get_lines()],
            [t.get_text() for leg in fig.legends for t in leg.get_texts()],
            [ax.get_legend() for ax in fig.axes])
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    proc = report_here("--out", str(tmp_path / "r"), outputs=store.outputs)
    assert proc.returncode == 0, proc.stderr
    ylims, lines, legend, inside = seen["loss_curves.png"]
    wild = next(r for r in (store.client.get_run(i) for i in store.children)
                if r.data.params["optimizer.lr"] == "0.25")
    assert max(m.value for m in store.client.get_metric_history(wild.info.run_id, "loss")) > 1e6
    assert ylims[0][1] < 1e3 and ylims[1][1] < 1e3
    assert {"lr=0.05", "lr=0.1", "lr=0.25", "diverged"} <= set(legend)
    assert all(leg is None for leg in inside)
    _, lines, legend, _ = seen["paths.png"]
    points = np.concatenate([p for p in lines if p.size])
    assert np.abs(points).max() <= 5.0 + 1e-9  # the default quadratic's window is [-5, 5]²
    assert "left the window" in legend
