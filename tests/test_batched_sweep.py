"""The batched launcher: the same runs as the basic launcher, the right groups, failures kept to their job."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from gdexp import batch, pipeline, processes

from .conftest import compose_config, store_uri

# two objectives × two rates × two seeds × two optimizers of uniform starts (one rate
# diverges on Rosenbrock); the optimizers share each objective's descent, and alternate in it
# (the group reorders its jobs so that one update call serves each optimizer)
MIXED = ("objective=quadratic,rosenbrock", "optimizer.lr=0.0019,0.01", "seed=0,1",
         "optimizer=gd,momentum",
         "init=uniform", "init.n_starts=2", "init.low=[-1.5,-0.5]", "init.high=[1.5,1.5]",
         "stop.max_steps=400", "tracking.plots=false")
# tags that name the run itself, its parent or when it ran
# what differs between any two runs: ids, and the process that ran them and when
OWN_TAGS = {"mlflow.parentRunId", "mlflow.runName", processes.PID_TAG, processes.START_TAG,
            processes.HEARTBEAT_TAG}


def _runs(outputs: Path):
    client = MlflowClient(store_uri(outputs))
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=1000)
    children = [r for r in runs if r.data.tags.get("gdexp.sweep") != "true"]
    return client, children


def _content(client, run, tmp: Path) -> dict:
    """Everything a run holds except ids and times: params, tags, metric histories, artifacts."""
    run_id = run.info.run_id
    metrics = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
               for k in run.data.metrics}
    dst = tmp / run_id
    dst.mkdir()
    local = Path(client.download_artifacts(run_id, "", str(dst)))
    artifacts = {}
    for path in sorted(local.rglob("*")):
        if path.is_file():
            name = path.relative_to(local).as_posix()
            if name.endswith(".npz"):
                with np.load(path) as z:
                    artifacts[name] = {k: z[k].tobytes() + str(z[k].shape).encode()
                                       for k in z.files}
            else:
                artifacts[name] = path.read_bytes()
    tags = {k: v for k, v in run.data.tags.items() if k not in OWN_TAGS}
    return {"params": run.data.params, "tags": tags, "metrics": metrics,
            "artifacts": artifacts, "status": run.info.status, "name": run.info.run_name}


def _job_files(outputs: Path) -> dict:
    """Per job folder, its .hydra files (minus what names the folder and the launcher)."""
    out = {}
    for hydra_dir in sorted(outputs.glob("sweeps/*/*/*/.hydra")):
        config = (hydra_dir / "config.yaml").read_text()
        overrides = (hydra_dir / "overrides.yaml").read_text()
        h = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]
        for key in ("launcher", "sweep"):
            h.pop(key)
        h["runtime"].pop("output_dir")
        h["runtime"]["choices"].pop("hydra/launcher")
        h["overrides"]["hydra"] = [o for o in h["overrides"]["hydra"]
                                   if not o.startswith("hydra/launcher")]
        out[overrides] = (config, h)
    return out


def _both_launchers(root: Path, *args: str) -> dict:
    """The sweep ``args`` through the batched (default) and the basic launcher, at once."""
    procs = {}
    for name, extra in (("batched", ()), ("basic", ("hydra/launcher=basic",))):
        outputs = root / name
        env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
        procs[name] = (outputs, subprocess.Popen(
            [sys.executable, "-m", "gdexp", "run", "-m", *extra, *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = {}
    for name, (outputs, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        done[name] = (outputs, stdout)
    return done


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same mixed sweep through the batched (default) and the basic launcher."""
    return _both_launchers(tmp_path_factory.mktemp("sweeps"), *MIXED)


def _same_runs(done: dict, tmp_path: Path, jobs: int) -> dict:
    """Each launcher's ``jobs`` runs the same (params, tags, metric histories, artifacts,
    status), in sweeps ``done`` by ``_both_launchers``; the basic launcher's runs."""
    contents = {}
    for name, (outputs, _) in done.items():
        client, runs = _runs(outputs)
        assert len(runs) == jobs, name
        (tmp_path / f"{name}-artifacts").mkdir()
        # by params: runs of one name may differ in a setting the name leaves out
        contents[name] = {json.dumps(r.data.params, sort_keys=True):
                          _content(client, r, tmp_path / f"{name}-artifacts") for r in runs}
    batched, basic = contents["batched"], contents["basic"]
    assert sorted(batched) == sorted(basic)
    for key in basic:
        for part in ("params", "tags", "metrics", "artifacts", "status"):
            assert batched[key][part] == basic[key][part], (basic[key]["name"], part)
    return basic


def test_batched_and_basic_sweeps_log_identical_runs(sweeps, tmp_path):
    basic = _same_runs(sweeps, tmp_path, 16)
    files = {"trace.npz", "starts.csv", "config.yaml", "diagnostics.npz"}
    assert all(files <= set(run["artifacts"]) for run in basic.values())
    # the group kept going past a diverged job
    assert {"diverged", "max_steps"} <= {run["tags"]["status"] for run in basic.values()}


def test_batched_and_basic_jobs_have_the_same_hydra_files(sweeps):
    files = {name: _job_files(outputs) for name, (outputs, _) in sweeps.items()}
    assert len(files["basic"]) == 16
    assert files["batched"] == files["basic"]


def _same_runs_both_ways(tmp_path: Path, jobs: int, *args: str) -> dict:
    """The sweep through both launchers: one group of ``jobs``, and every run the same
    (``_same_runs``); the basic launcher's runs."""
    done = _both_launchers(tmp_path, *args)
    assert re.findall(r"^group \d+/\d+: \d+ jobs", done["batched"][1], re.M) == [
        f"group 1/1: {jobs} jobs"]
    return _same_runs(done, tmp_path, jobs)


def test_a_mini_batch_sweep_descends_together_and_logs_what_its_jobs_log_alone(tmp_path):
    # SGD, two seeds (two batch sequences): a rate whose batch loss overflows between the
    # evaluation steps, and rates that run to the budget, with figures (the learning curves)
    basic = _same_runs_both_ways(tmp_path, 6, "objective=least_squares", "data=diabetes",
                                 "data.batch_size=32", "data.eval_every=100",
                                 "optimizer.lr=0.05,0.3,12", "seed=0,1", "stop.max_steps=150")
    assert all("plots/learning.png" in b["artifacts"] for b in basic.values())
    stops = {(b["tags"]["status"], b["params"]["seed"]): b["metrics"]["steps"][0][1]
             for b in basic.values()}
    assert {status for status, _ in stops} == {"diverged", "max_steps"}, stops
    assert all(stops[("diverged", seed)] % 100 for seed in "01"), stops  # off the evaluations


def test_a_sharpness_sweep_descends_together_and_logs_what_its_jobs_log_alone(tmp_path):
    # sharpness curves on two schedules, a rate that diverges, the edge-of-stability claim
    basic = _same_runs_both_ways(tmp_path, 4, "objective=mlp", "data=chebyshev",
                                 "objective.hidden=[6]", "init=model", "stop.max_steps=150",
                                 "stop.grad_tol=0", "optimizer.lr=0.2,3",
                                 "diagnostics.sharpness_every=5,8", "claim=edge_of_stability")
    assert all({"plots/sharpness.png", "diagnostics.npz"} <= set(b["artifacts"])
               for b in basic.values())
    assert {b["tags"]["status"] for b in basic.values()} == {"diverged", "max_steps"}


def test_a_mixed_sweep_forms_one_group_per_objective(sweeps):
    _, stdout = sweeps["batched"]
    assert re.findall(r"^group (\d)/(\d): (\d+) jobs", stdout, re.M) == [
        ("1", "2", "8"), ("2", "2", "8")]
    # one compact line per job, no per-job "job k/N" lines
    lines = re.findall(r"^job (\d+)/16  .*\[run [0-9a-f]{8}\]$", stdout, re.M)
    assert sorted(int(k) for k in lines) == list(range(1, 17))
    rules = re.findall(r"^job \d+/16  \w+-(gd|momentum)-", stdout, re.M)
    assert rules[:4] == ["gd", "momentum", "gd", "momentum"], rules  # interleaved in the sweep
    assert len(re.findall(r"^job \d+/", stdout, re.M)) == 16


def test_groups_are_what_cannot_vary_inside_one_descent():
    def job(*overrides):
        cfg = compose_config(*overrides, "tracking=off")
        return pipeline.prepare(cfg, Path("/nonexistent"), list(overrides))

    jobs = [job("objective=rosenbrock", "optimizer.lr=0.001", "seed=3"),
            job("objective=quadratic", "optimizer.lr=0.1"),
            job("objective=rosenbrock", "optimizer.lr=0.002", "init=uniform",
                "init.n_starts=5", "basin_tol=0.1", "diagnostics.enabled=false"),
            job("objective=rosenbrock", "objective.b=10"),             # another function
            # other update rules and constants: the same descent (optimizers.stacked)
            job("objective=rosenbrock", "optimizer=momentum"),
            job("objective=rosenbrock", "optimizer=momentum", "optimizer.lr=0.01"),
            job("objective=rosenbrock", "optimizer=momentum", "optimizer.momentum=0.5"),
            job("objective=rosenbrock", "stop.max_steps=10"),          # other stop rules
            job("objective=rosenbrock", "schedule=cosine", "schedule.decay_steps=100"),
            job("objective=rosenbrock", "line_search=armijo"),
            job("objective=rosenbrock", "optimizer.lr=[0.001,0.002]"),
            # sharpness curves: together on any schedules, apart on another Lanczos tolerance
            job("objective=rosenbrock", "diagnostics.sharpness_every=10"),
            job("objective=rosenbrock", "diagnostics.sharpness_every=7", "optimizer.lr=0.01"),
            job("objective=rosenbrock", "diagnostics.sharpness_every=10",
                "diagnostics.sharpness_tol=1e-6"),
            # mini-batches: each job on the batches its seed draws, side by side
            job("objective=least_squares", "data=diabetes", "data.batch_size=32"),
            job("objective=least_squares", "data=diabetes", "data.batch_size=32",
                "optimizer.lr=0.01", "optimizer=momentum"),
            job("objective=least_squares", "data=diabetes", "data.batch_size=32", "seed=1"),
            job("objective=least_squares", "data=diabetes", "data.batch_size=16"),  # another size
            job("objective=least_squares", "data=diabetes", "data.batch_size=32",
                "data.batches=per_start", "init.n_starts=3"),
            job("objective=least_squares", "data=diabetes", "data.batch_size=32",
                "data.batches=per_start", "init.n_starts=3", "seed=2")]
    assert batch.form_groups(jobs) == [[0, 2, 4, 5, 6, 10], [1], [3], [7], [8], [9], [11, 12],
                                       [13], [14, 15, 16], [17], [18, 19]]
    jobs = jobs[:11]
    # the per-group bounds: a job cap and a memory cap
    assert batch.form_groups(jobs, max_jobs=2) == [[0, 2], [4, 5], [6, 10], [1], [3], [7],
                                                  [8], [9]]
    one = batch.recorded_bytes(jobs[0].plan)
    assert batch.form_groups(jobs[:1] * 5, max_bytes=2 * one) == [[0, 1], [2, 3], [4]]


def test_each_job_of_a_group_records_the_sharpness_curve_it_records_alone():
    """One Lanczos per sharpness step over the group's due columns; per job, the steps,
    values and products of its lone run: on its own schedule (every 5 or 7 steps), until
    its own last start stops (one diverges early, the others run to the budget)."""
    from gdexp import config

    def plan(lr, every, *extra):
        return config.build(compose_config(
            "objective=mlp", "data=chebyshev", "objective.hidden=[6]", "init=model",
            f"optimizer.lr={lr}", f"diagnostics.sharpness_every={every}",
            "stop.max_steps=120", "stop.grad_tol=2e-3", "tracking=off", *extra))

    plans = [plan(0.05, 5), plan(3.0, 7), plan(0.3, 5, "optimizer=momentum", "seed=2"),
             plan("[0.02,0.6]", 7, "init.n_starts=2"), plan(1.5, 5, "seed=1")]
    monitors = [pipeline.sharpness_monitor(p) for p in plans]
    together = batch.descend_together(plans, monitors=monitors,
                                      rules=[str(p.optimizer) for p in plans])
    arrays = {}
    for j, (p, m, result) in enumerate(zip(plans, monitors, together)):
        lone = pipeline.sharpness_monitor(p)
        alone = pipeline._descend(p, lone)
        assert np.array_equal(result.x, alone.x) and np.array_equal(result.steps, alone.steps)
        a, b = m.arrays(pipeline._rates(p), p.optimizer.stability), lone.arrays(
            pipeline._rates(p), p.optimizer.stability)
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key], equal_nan=True), (j, key)
        arrays[j] = b
    outcomes = {o for r in together for o in r.outcomes}
    assert {"diverged", "max_steps"} <= outcomes, outcomes
    # the schedules and stops differ, so the records do
    lengths = {j: len(a["sharpness_steps"]) for j, a in arrays.items()}
    assert len(set(lengths.values())) > 2, lengths


def _job(outputs: Path, lr: float, *extra: str):
    """A prepared 100-step job at rate ``lr``, its folder ``job-<lr>``, tracked in outputs/."""
    cfg = compose_config(f"optimizer.lr={lr}", "stop.max_steps=100", *extra,
                         f"tracking.uri={store_uri(outputs)}")
    return pipeline.prepare(cfg, outputs / f"job-{lr}", [f"optimizer.lr={lr}"])


def test_a_failing_job_fails_only_itself(outputs, monkeypatch):
    def job(lr):
        return _job(outputs, lr, "tracking.plots=false")

    jobs = [job(0.1), job(0.2), job(0.05)]
    assert batch.form_groups(jobs) == [[0, 1, 2]]
    write_files = pipeline.write_files

    def broken(out_dir, *args, **kw):  # the second job's files cannot be written
        if out_dir.name == "job-0.2":
            raise OSError(28, "No space left on device", str(out_dir))
        return write_files(out_dir, *args, **kw)

    monkeypatch.setattr(pipeline, "write_files", broken)
    outcomes = batch.run_group(jobs)
    assert isinstance(outcomes[1], OSError)
    assert all(isinstance(o, pipeline.Outcome) for o in (outcomes[0], outcomes[2]))
    _, runs = _runs(outputs)
    status = {r.data.params["optimizer.lr"]: r.info.status for r in runs}
    assert status == {"0.1": "FINISHED", "0.2": "FAILED", "0.05": "FINISHED"}
    _assert_failed_as_alone([r for r in runs if r.info.status == "FAILED"][0])


def _assert_failed_as_alone(run) -> None:
    """A job that fails after its descent, before its rows are logged, keeps what a lone run
    failing there keeps: its params, no metrics, no outcome tags (its store batch, written
    by a helper process, is handed over only once its files are in)."""
    assert run.data.params["optimizer.lr"]
    assert run.data.metrics == {}
    assert "status" not in run.data.tags and "stop_rule" not in run.data.tags


def test_a_group_whose_helper_processes_cannot_start_finishes_here(outputs, monkeypatch):
    """fork refused (no memory, a process limit): every job draws and logs in this process."""
    def job(lr):
        return _job(outputs, lr)

    def refused():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    outcomes = batch.run_group([job(0.1), job(0.2)])
    assert all(isinstance(o, pipeline.Outcome) for o in outcomes), outcomes
    _, runs = _runs(outputs)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert all(r.data.metrics["steps"] == 100 for r in runs)
    assert (outputs / "job-0.2" / "artifacts" / "plots" / "curves.png").is_file()


def test_runs_created_while_jobs_are_prepared_are_the_runs_their_jobs_log(outputs,
                                                                          monkeypatch):
    """A helper process creates each prepared job's run (RUNNING, its tags and name) while
    the launcher prepares the next; the job then logs into that run, and no other is made.
    Where the helper cannot, the run is created where the job is taken."""
    from mlflow.tracking import MlflowClient as Client

    created = []
    create_run = Client.create_run

    def counted(self, *args, **kwargs):
        created.append(os.getpid())
        return create_run(self, *args, **kwargs)

    monkeypatch.setattr(Client, "create_run", counted)
    early = batch.EarlyRuns()
    jobs = [_job(outputs, lr, "tracking.plots=false") for lr in (0.1, 0.2)]
    try:
        for job in jobs:
            early.submit(job)
        futures = list(early.futures.values())
        running = [f.result() for f in futures]
        client = Client(store_uri(outputs))
        assert [client.get_run(run_id).info.status for run_id, _ in running] == \
            ["RUNNING", "RUNNING"]
        assert client.get_run(running[0][0]).info.run_name == jobs[0].name
        outcomes = batch.run_group(jobs, early=early)
    finally:
        early.close()
    assert [o.run_id for o in outcomes] == [run_id for run_id, _ in running]
    assert created == []  # none was created here (the helper counts its own, in its memory)
    _, runs = _runs(outputs)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags["config_hash"] == j.chash for r, j in
               zip(sorted(runs, key=lambda r: r.info.run_name), sorted(jobs, key=lambda j: j.name)))

    # a helper whose creation fails: the job's run is made where it is taken, here
    monkeypatch.setattr(batch, "_create_run", _unreachable_store)
    early = batch.EarlyRuns()
    job = _job(outputs, 0.3, "tracking.plots=false")
    try:
        early.submit(job)
        assert isinstance(early.futures[id(job)].exception(), OSError)
        outcome, = batch.run_group([job], early=early)
    finally:
        early.close()
    assert created == [os.getpid()]
    assert MlflowClient(store_uri(outputs)).get_run(outcome.run_id).info.status == "FINISHED"
    assert len(_runs(outputs)[1]) == 3


def _unreachable_store(*args):
    raise OSError(113, "No route to host")


def test_figures_drawn_by_other_processes_are_those_a_job_draws_alone(outputs, tmp_path):
    """A plotted group's figures are drawn by forked processes; each run's artifacts, figures
    included, are byte for byte those the basic launcher's job draws itself."""
    contents = {}
    for name, extra in (("batched", ()), ("basic", ("hydra/launcher=basic",))):
        out = outputs / name
        env = {**os.environ, "GDEXP_OUTPUTS": str(out)}
        proc = subprocess.run([sys.executable, "-m", "gdexp", "run", "-m", *extra,
                               "optimizer.lr=0.05,0.1,0.21", "stop.max_steps=300"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        client, runs = _runs(out)
        (tmp_path / name).mkdir()
        contents[name] = {r.info.run_name: _content(client, r, tmp_path / name)["artifacts"]
                          for r in runs}
        assert not list(out.glob("sweeps/*/*/*/artifacts.partial"))
    assert sorted(contents["batched"]) == sorted(contents["basic"])
    for run_name, artifacts in contents["basic"].items():
        assert {"plots/curves.png", "plots/contour.png"} <= set(artifacts), run_name
        assert contents["batched"][run_name] == artifacts, run_name


def test_a_job_whose_figures_fail_fails_alone(outputs, monkeypatch):
    def job(lr):
        return _job(outputs, lr)

    jobs = [job(0.1), job(0.2), job(0.05)]
    from gdexp import plots

    run_figures = plots.run_figures

    def broken(out_dir, *args, **kw):  # inherited by the drawing processes (fork)
        if "job-0.2" in str(out_dir):
            raise ValueError("cannot draw this one")
        return run_figures(out_dir, *args, **kw)

    monkeypatch.setattr(plots, "run_figures", broken)
    outcomes = batch.run_group(jobs)
    assert isinstance(outcomes[1], ValueError) and "cannot draw" in str(outcomes[1])
    _, runs = _runs(outputs)
    status = {r.data.params["optimizer.lr"]: r.info.status for r in runs}
    assert status == {"0.1": "FINISHED", "0.2": "FAILED", "0.05": "FINISHED"}
    assert (outputs / "job-0.1" / "artifacts" / "plots" / "curves.png").is_file()
    assert not (outputs / "job-0.2" / "artifacts.partial").exists()
    _assert_failed_as_alone([r for r in runs if r.info.status == "FAILED"][0])


class _Unpicklable(RuntimeError):
    """An error a helper process cannot send back (it holds a closure)."""

    def __init__(self, message):
        super().__init__(message)
        self.handle = lambda: None


@pytest.mark.parametrize("error", [RuntimeError, _Unpicklable], ids=["error", "unpicklable"])
def test_store_batches_written_by_other_processes_fail_their_job_alone(outputs, monkeypatch,
                                                                       error):
    """A group's store batches are written by forked processes; one the store refuses fails
    that job only (even when the helper cannot send the error back as it is), and the
    others' rows are those a job logs alone."""
    from gdexp import tracking

    def job(lr):
        return _job(outputs, lr, "tracking.plots=false")

    writers = outputs / "writers.txt"
    log = tracking.log

    def refusing(client, run_id, **rows):  # inherited by the helper processes (fork)
        if rows.get("metrics") and (rows.get("params") or {}).get("optimizer.lr") == "0.2":
            raise error("the store refused this batch")
        if rows.get("metrics"):
            with open(writers, "a") as f:
                f.write(f"{os.getpid()}\n")
        return log(client, run_id, **rows)

    monkeypatch.setattr(tracking, "log", refusing)
    outcomes = batch.run_group([job(0.1), job(0.2), job(0.05)])
    if error is RuntimeError:
        assert isinstance(outcomes[1], RuntimeError) and "refused" in str(outcomes[1])
    else:  # what reaches this process is the failure to send the error back
        assert isinstance(outcomes[1], Exception) and "pickle" in str(outcomes[1]).lower()
    pids = set(writers.read_text().split())
    assert pids and str(os.getpid()) not in pids  # written by the helpers, not by this one
    monkeypatch.setattr(tracking, "log", log)
    client, runs = _runs(outputs)
    by_lr = {r.data.params["optimizer.lr"]: r for r in runs}
    assert {k: r.info.status for k, r in by_lr.items()} == \
        {"0.1": "FINISHED", "0.2": "FAILED", "0.05": "FINISHED"}
    alone = outputs / "alone"
    cfg = compose_config("optimizer.lr=0.1", "stop.max_steps=100", "tracking.plots=false",
                         f"tracking.uri={store_uri(alone)}")
    pipeline.execute(cfg, alone / "job", ["optimizer.lr=0.1"])
    _, [single] = _runs(alone)
    assert _content(client, by_lr["0.1"], outputs)["metrics"] == \
        _content(tracking.client(store_uri(alone)), single, outputs)["metrics"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill-pid"])
def test_a_signal_while_figures_are_drawn_stops_every_process(outputs, sig):
    env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
    rates = ",".join(repr(round(0.01 + i * 0.001, 4)) for i in range(30))
    proc = subprocess.Popen([sys.executable, "-m", "gdexp", "run", "-m", f"optimizer.lr={rates}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        finished = 0
        for line in proc.stdout:
            finished += line.startswith("job ")
            if finished == 3:
                break
        drawing = processes.descendants(proc.pid)
        assert drawing, "no drawing processes"
        if sig == signal.SIGINT:  # a terminal's Ctrl-C reaches the whole group
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig
    what = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert stderr.strip().splitlines() == [
        f"gdexp: interrupted by {what}; every unfinished run ended KILLED"]
    time.sleep(0.5)
    assert not [p for p in drawing if processes._stat(p[0]) is not None]
    _, runs = _runs(outputs)
    statuses = [r.info.status for r in runs]
    assert len(statuses) == 30 and set(statuses) == {"FINISHED", "KILLED"}
    assert statuses.count("FINISHED") >= 3
    assert not list(outputs.glob("sweeps/*/*/*/artifacts.partial"))


def test_ctrl_c_marks_every_unfinished_run_of_the_group_killed(outputs):
    env = {**os.environ, "GDEXP_OUTPUTS": str(outputs)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gdexp", "run", "-m", "optimizer.lr=0.01,0.02,0.03",
         "stop.max_steps=100000000", "stop.grad_tol=0", "tracking.plots=false"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("group 1/1: 3 jobs"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    client = MlflowClient(store_uri(outputs))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if r.data.tags.get("gdexp.sweep") != "true"]
    parents = [r for r in runs if r not in children]
    assert len(children) == 3 and {r.info.status for r in children} == {"KILLED"}
    assert [p.info.status for p in parents] == ["KILLED"]


def test_job_files_read_back_as_omegaconf_writes_them():
    """The launcher writes a job's .hydra files with libyaml; they must read back exactly as
    OmegaConf.to_yaml's do: strings that look like numbers, booleans or null stay strings,
    interpolations stay unresolved, enums are their names, long and multi-line text survives."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from gdexp.config import to_yaml as _to_yaml

    node = OmegaConf.create({
        "numbers_as_text": ["1", "1.5", "1e3", "-2", ".inf", "nan", "0x1F", "1_000"],
        "words": ["true", "False", "yes", "off", "null", "~", "", " padded ", "a: b", "#x"],
        "interpolation": "${stop.max_steps}", "resolver": "${now:%H-%M-%S}",
        "long": "word " * 60 + "\\ and an escape\t, \"quotes\" and 'single'",
        "multi": "line one\nline two\n  indented\n", "unicode": "λmax ≤ 2/η",
        "values": [1, 1.5, 1e-300, True, None, [], {}], "nested": {"a": {"b": [{"c": 1}]}}})
    OmegaConf.update(node, "mode", RunMode.MULTIRUN, force_add=True)
    ours, theirs = _to_yaml(node), OmegaConf.to_yaml(node)
    assert OmegaConf.to_container(OmegaConf.create(ours)) == \
        OmegaConf.to_container(OmegaConf.create(theirs))
    assert yaml.safe_load(ours) == yaml.safe_load(theirs)
    assert OmegaConf.create(ours).numbers_as_text[2] == "1e3"  # not the float 1000.0
