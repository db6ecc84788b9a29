"""Batched sweeps: prepared jobs grouped by what one descent must share, each group descended once."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from . import descent, pipeline
from .pipeline import Job, Outcome

# Top-level keys a job of a group may set on its own: the starts (seed, init), what happens
# after the descent (tracking, diagnostics, sweep_metric, basin_tol) and the per-job trace
# budgets. Everything else (objective, optimizer, schedule, line search, stop rules, and any
# key added later) must be equal within a group: a key the descent reads must not be here.
PER_JOB_KEYS = ("seed", "init", "tracking", "diagnostics", "sweep_metric", "basin_tol",
                "trace_budget", "path_budget")
# ... and of the optimizer, its base rate, which the core takes per start.
PER_JOB_OPTIMIZER_KEYS = ("lr",)

MAX_GROUP_JOBS = 1000
MAX_GROUP_BYTES = 1 << 30


def group_key(resolved: dict) -> str:
    """Equal for two jobs exactly when they can share one descent."""
    core = {k: v for k, v in resolved.items() if k not in PER_JOB_KEYS}
    if isinstance(core.get("optimizer"), dict):
        core["optimizer"] = {k: v for k, v in core["optimizer"].items()
                             if k not in PER_JOB_OPTIMIZER_KEYS}
    return json.dumps(core, sort_keys=True, default=str)


def recorded_bytes(plan) -> int:
    """What a job adds to its group's memory: its recorded curves and path, and its iterates."""
    d, n = plan.x0.shape
    rk = plan.run_kwargs
    curve_rows = min(max(rk["trace_budget"] // n, 4), rk["max_steps"]) + 1
    path_rows = min(max(rk["path_budget"] // (d * n), 4), rk["max_steps"]) + 1
    return 8 * (3 * curve_rows * n + path_rows * d * n + 16 * d * n)


def groupable(job: Job) -> bool:
    """Whether a job may share its descent. A mini-batch descent evaluates the full batch
    when any of its starts' batch loss blows up, and a sharpness curve rides on the run's
    own callback: such jobs descend alone, as ``gdexp run`` would descend them."""
    return (job.plan.run_kwargs.get("batch_size") is None
            and pipeline.sharpness_monitor(job.plan) is None)


def form_groups(jobs: Sequence[Job], max_jobs: int = MAX_GROUP_JOBS,
                max_bytes: int = MAX_GROUP_BYTES) -> list[list[int]]:
    """Indices of the jobs per group, in sweep order; a group never exceeds ``max_jobs`` jobs
    nor ``max_bytes`` of recorded trace (a job larger than that alone is a group of one)."""
    by_key: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        key = group_key(job.resolved) if groupable(job) else f"alone {i}"
        by_key.setdefault(key, []).append(i)
    groups = []
    for members in by_key.values():
        current, size = [], 0
        for i in members:
            b = recorded_bytes(jobs[i].plan)
            if current and (len(current) >= max_jobs or size + b > max_bytes):
                groups.append(current)
                current, size = [], 0
            current.append(i)
            size += b
        groups.append(current)
    return groups


class GroupProgress(pipeline.Progress):
    """`group 2/5: 40 jobs, step k/N` when the group starts and every few seconds after."""

    def __init__(self, label: str, n_jobs: int, max_steps: int, every_seconds: float = 5.0,
                 stream=None):
        super().__init__(every_seconds, stream or sys.stdout)
        self.head = f"{label}: {n_jobs} job{'s' if n_jobs != 1 else ''}"
        self.max_steps = max_steps
        print(f"{self.head}, step 0/{max_steps}", file=self.stream, flush=True)

    def __call__(self, k, x, f, grad_norm, active):
        if not self.due(k):
            return
        print(f"{self.head}, step {k}/{self.max_steps}  active {int(active.sum())}/{active.size}",
              file=self.stream, flush=True)


# What the core takes per job; every other keyword of a plan's run is shared by its group.
PER_JOB_RUN_KWARGS = ("basin_tol", "trace_budget", "path_budget")


def descend_together(plans: Sequence, callback=None) -> list:
    """One batched descent over the plans (which share everything but their starts, rates and
    per-job budgets); a Result per plan, equal to what ``pipeline`` gets for it alone."""
    first = plans[0]
    shared = {k: v for k, v in first.run_kwargs.items() if k not in PER_JOB_RUN_KWARGS}
    per_job = {k: [p.run_kwargs[k] for p in plans] for k in PER_JOB_RUN_KWARGS}
    return descent.run_jobs(first.objective, [p.x0 for p in plans], first.optimizer,
                            [p.lr for p in plans], schedule=first.schedule,
                            line_search=first.line_search, callback=callback, **per_job,
                            **shared)


# What the drawing processes draw: set before they are forked, so that they inherit it (an
# objective holds closures, which do not pickle); a task names its entry by index.
_DRAWING: list = []


def _drawing_process() -> None:
    """A drawing process leaves signals to the sweep's process: Ctrl-C reaches it too (the
    terminal's group) and is ignored; SIGTERM, which that process sends its descendants when
    it stops, ends it at once, without the handler it inherited."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _draw(k: int) -> None:
    from . import plots

    out, objective, result, diag, title = _DRAWING[k]
    plots.run_figures(out, objective, result, diag, title=title)


class _Drawing:
    """The figures of a group's runs drawn by forked processes, one per core, while this one
    writes the runs' other files and their store rows in job order: matplotlib takes ≈ 0.2 s
    a figure, most of a plotted sweep's time. Linux (fork) and two cores or more; otherwise
    each run draws its own figures as it finishes."""

    def __init__(self, tasks: dict):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from . import plots  # noqa: F401 - imported once here, inherited by the processes

        _DRAWING[:] = list(tasks.values())
        workers = min(len(tasks), os.cpu_count() or 1)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_drawing_process)
        self.futures = {i: (k, self.pool.submit(_draw, k)) for k, i in enumerate(tasks)}

    @classmethod
    def start(cls, jobs, todo, results, diags) -> Optional["_Drawing"]:
        tasks = {}
        for i, result, diag in zip(todo, results, diags):
            job = jobs[i]
            if job.cfg.tracking.plots and not isinstance(result, BaseException):
                tasks[i] = (pipeline.partial_plots(job.out_dir), job.plan.objective, result,
                            diag, pipeline.run_name(job.cfg, job.plan))
        if len(tasks) < 2 or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
            return None
        return cls(tasks)

    def waiter(self, i: int) -> Optional[Callable[[], None]]:
        from concurrent.futures.process import BrokenProcessPool

        if i not in self.futures:
            return None
        k, future = self.futures[i]

        def wait() -> None:
            try:
                future.result()
            except BrokenProcessPool:  # a drawing process died (e.g. out of memory): here
                _draw(k)
        return wait

    def close(self) -> None:
        """Stop drawing; a run that did not finish leaves no half-drawn artifacts folder (a
        finished one has renamed its own)."""
        import shutil

        self.pool.shutdown(wait=True, cancel_futures=True)
        for out, *_ in _DRAWING:
            shutil.rmtree(Path(out).parent, ignore_errors=True)
        _DRAWING.clear()


def run_group(jobs: Sequence[Job], label: str = "group 1/1",
              out=sys.stdout) -> list[Union[Outcome, BaseException]]:
    """Descend the jobs of one group together; then files, tracking and a line per job.

    Every tracked job's run is created (RUNNING) before the descent and ended on its own:
    FINISHED, or FAILED when its own finishing raises (the others go on), or KILLED for every
    run still open on Ctrl-C or SIGTERM. Should the batched descent itself raise, each job is
    descended alone, so that an error fails only the job that causes it.
    """
    from threadpoolctl import threadpool_limits

    outcomes: list = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        done = pipeline.skip(job, out)
        if done is None:
            todo.append(i)
        else:
            outcomes[i] = done
    if not todo:
        return outcomes
    status = {}  # job index -> its run's status context, entered
    try:
        # entered in reverse so that ending them in job order is last-in, first-out (each
        # context restores the signal handler it found)
        for i in reversed(todo):
            job = jobs[i]
            if job.uri is not None:
                from . import tracking

                pipeline.start(job)
                context = tracking.run_status(job.client, job.run_id)
                context.__enter__()
                status[i] = context
        plans = [jobs[i].plan for i in todo]
        # a job alone descends as `gdexp run` descends it (its sharpness curve, its progress)
        monitors = ([pipeline.sharpness_monitor(plans[0])] if len(plans) == 1
                    else [None] * len(plans))
        with threadpool_limits(1, user_api="blas"):
            try:
                if len(plans) == 1:
                    results = [pipeline._descend(plans[0], monitors[0])]
                else:
                    progress = GroupProgress(label, len(todo), plans[0].run_kwargs["max_steps"],
                                             stream=out)
                    results = descend_together(plans, callback=progress)
            except Exception:  # noqa: BLE001 - then each job alone: only the guilty one fails
                results = []
                for plan, monitor in zip(plans, monitors):
                    try:
                        results.append(pipeline._descend(plan, monitor))
                    except Exception as e:  # noqa: BLE001
                        results.append(e)
            results, diags = _diagnose_each(jobs, todo, list(results), monitors)
            drawing = _Drawing.start(jobs, todo, results, diags)
            try:
                for i, result, monitor, diag in zip(todo, results, monitors, diags):
                    _finish_one(jobs[i], i, result, monitor, diag, drawing, status, outcomes,
                                out)
            finally:
                if drawing is not None:
                    drawing.close()
    except BaseException as e:
        # Ctrl-C, SIGTERM (KILLED) or a store failure (FAILED): every run still open ends
        for i in sorted(status):
            try:
                status[i].__exit__(type(e), e, e.__traceback__)
            except BaseException:  # noqa: BLE001 - keep closing the others
                pass
        raise
    return outcomes


def _diagnose_each(jobs, todo, results, monitors) -> tuple[list, list]:
    """Each descended job's diagnostics; a job whose diagnostics raise gets the error as its
    result (it alone fails)."""
    diags = []
    for k, (i, result, monitor) in enumerate(zip(todo, results, monitors)):
        diag = None
        if not isinstance(result, BaseException):
            try:
                diag = pipeline._diagnose(jobs[i].cfg, jobs[i].plan, result, monitor)
            except Exception as e:  # noqa: BLE001 - one job's failure is that job's
                results[k] = e
        diags.append(diag)
    return results, diags


def _finish_one(job: Job, i: int, result, monitor, diag, drawing, status: dict,
                outcomes: list, out) -> None:
    """A job's files, store rows and result line; its run ended FINISHED, or FAILED (with
    its params) when any of that raises."""
    context = status.get(i)
    try:
        if isinstance(result, BaseException):
            raise result
        outcome = pipeline.finish(job, result, monitor, with_params=True, diag=diag,
                                  drawn=drawing.waiter(i) if drawing is not None else None)
    except Exception as e:  # noqa: BLE001 - one job's failure is that job's
        outcomes[i] = e
        if context is not None:
            try:  # a failed run still says what it was (finish logs params last)
                pipeline.log_params(job)
            except Exception:  # noqa: BLE001 - the store may be what failed
                pass
            del status[i]
            context.__exit__(type(e), e, e.__traceback__)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"{job.lead}{job.name}: failed: {type(e).__name__}: {first}", file=out,
              flush=True)
        return
    if context is not None:
        del status[i]
        context.__exit__(None, None, None)
    outcomes[i] = outcome
    pipeline.announce(job, outcome, out)


def sweep_value(job: Job, outcome: Outcome) -> float:
    """What a sweeper minimises for this job (as `gdexp run` returns it)."""
    from .config import sweep_metric

    return outcome.sweep_value(sweep_metric(job.cfg), int(job.cfg.stop.max_steps))
