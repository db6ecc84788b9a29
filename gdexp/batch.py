"""Batched sweeps: prepared jobs grouped by what one descent must share, each group descended once."""
from __future__ import annotations

import collections
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from . import descent, optimizers, pipeline
from .pipeline import Job, Outcome

# Top-level keys a job of a group may set on its own: the starts (seed, init), the optimizer
# and its rate (each job's columns are updated by its own rule, ``optimizers.stacked``), what
# happens after the descent (tracking, diagnostics, sweep_metric, basin_tol) and the per-job
# trace budgets. Everything else (objective, data, schedule, line search, stop rules, and any
# key added later) must be equal within a group: a key the descent reads is here only when
# the core takes it per job (descent.run_jobs: starts, rates, an optimizer per block, a
# mini-batch job's batches, which its seed draws).
PER_JOB_KEYS = ("seed", "init", "optimizer", "tracking", "diagnostics", "sweep_metric",
                "basin_tol", "trace_budget", "path_budget")

MAX_GROUP_JOBS = 1000
MAX_GROUP_BYTES = 1 << 30


def group_key(resolved: dict) -> str:
    """Equal for two jobs exactly when they can share one descent."""
    core = {k: v for k, v in resolved.items() if k not in PER_JOB_KEYS}
    return json.dumps(core, sort_keys=True, default=str)


def update_rule(resolved: dict) -> str:
    """Equal for two jobs exactly when their optimizers update alike (the rate aside: the
    core takes it per start)."""
    opt = resolved.get("optimizer")
    opt = {k: v for k, v in opt.items() if k != "lr"} if isinstance(opt, dict) else opt
    return json.dumps(opt, sort_keys=True, default=str)


def recorded_bytes(plan) -> int:
    """What a job adds to its group's memory: its recorded curves (a mini-batch job's batch
    loss too) and path, and its iterates."""
    d, n = plan.x0.shape
    rk = plan.run_kwargs
    curve_rows = min(max(rk["trace_budget"] // n, 4), rk["max_steps"]) + 1
    path_rows = min(max(rk["path_budget"] // (d * n), 4), rk["max_steps"]) + 1
    curves = 3 if rk.get("batch_size") is None else 4
    return 8 * (curves * curve_rows * n + path_rows * d * n + 16 * d * n)


def _key(job: Job) -> str:
    # Sharpness curves of one descent come from one Lanczos: one tolerance.
    diag = job.plan.diagnostics or {}
    key = group_key(job.resolved)
    if diag.get("sharpness_every"):
        key += f" sharpness_tol={diag['sharpness_tol']}"
    return key


def form_groups(jobs: Sequence[Job], max_jobs: int = MAX_GROUP_JOBS,
                max_bytes: int = MAX_GROUP_BYTES) -> list[list[int]]:
    """Indices of the jobs per group, in sweep order; a group never exceeds ``max_jobs`` jobs
    nor ``max_bytes`` of recorded trace (a job larger than that alone is a group of one)."""
    by_key: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        by_key.setdefault(_key(job), []).append(i)
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
PER_JOB_RUN_KWARGS = ("basin_tol", "trace_budget", "path_budget", "batch_seed")


def descend_together(plans: Sequence, callback=None,
                     rules: Optional[Sequence[str]] = None,
                     monitors: Optional[Sequence] = None) -> list:
    """One batched descent over the plans (which share everything but their starts, rates,
    optimizers and per-job budgets); a Result per plan, equal to what ``pipeline`` gets for it
    alone. ``rules[j]``: plan j's ``update_rule`` (None: the plans share the first's
    optimizer). Jobs of one rule are descended side by side, their columns updated by one
    call of their optimizer (``optimizers.stacked``). ``monitors[j]``: plan j's sharpness
    monitor or None; each records what it would alone (``sharpness.together``)."""
    first = plans[0]
    order = list(range(len(plans)))
    optimizer = first.optimizer
    if rules is not None and len(set(rules)) > 1:
        rank = {rule: r for r, rule in reversed(list(enumerate(rules)))}
        order.sort(key=lambda j: rank[rules[j]])  # stable: job order within a rule
        blocks: list = []
        for j in order:
            if blocks and blocks[-1][0] == rules[j]:
                blocks[-1][2] += plans[j].n
            else:
                blocks.append([rules[j], plans[j].optimizer, plans[j].n])
        optimizer = optimizers.stacked([(opt, n) for _, opt, n in blocks])
    ordered = [plans[j] for j in order]
    shared = {k: v for k, v in first.run_kwargs.items() if k not in PER_JOB_RUN_KWARGS}
    per_job = {k: [p.run_kwargs[k] for p in ordered] for k in PER_JOB_RUN_KWARGS
               if k in first.run_kwargs}
    if monitors is not None and any(m is not None for m in monitors):
        from .sharpness import chain, together

        callback = chain(callback, together([monitors[j] for j in order],
                                            [p.n for p in ordered]))
    results = descent.run_jobs(first.objective, [p.x0 for p in ordered], optimizer,
                               [p.lr for p in ordered], schedule=first.schedule,
                               line_search=first.line_search, callback=callback, **per_job,
                               **shared)
    out: list = [None] * len(plans)
    for j, result in zip(order, results):
        out[j] = result
    return out


# What the helper processes do: set before they are forked, so that they inherit it (an
# objective holds closures, which do not pickle); a task names its entry by index.
_TASKS: list = []
# Processes writing one sqlite store at once gain little beyond two (two reach 1.4x the rows
# per second of one) and wait on each other's locks.
MAX_STORE_WRITERS = 2


def _helper_process(stores: bool) -> None:
    """A helper process leaves signals to the sweep's process: Ctrl-C reaches it too (the
    terminal's group) and is ignored; SIGTERM, which that process sends its descendants when
    it stops, ends it at once, without the handler it inherited. ``stores``: it writes to
    stores, through connections of its own. The objects it inherited are left out of its
    garbage collections (``gc.freeze``): a full collection would walk all of them, copying
    every page it touches (measured: a store writer's first batch took 0.55 s, not 0.05 s)."""
    import gc
    import signal

    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if stores:
        from . import tracking

        tracking.forked()


def _started() -> None:
    """A first task: every process of a pool is forked when it is submitted."""


def _draw(k: int) -> None:
    from . import plots

    out, objective, result, diag, title = _TASKS[k][0]
    plots.run_figures(out, objective, result, diag, title=title)


def _log(k: int) -> None:
    from . import tracking

    uri, run_id, rows = _TASKS[k][1]
    tracking.log(tracking.client(uri), run_id, **rows)


def _create_run(uri: str, experiment_id: str, name: str, tags: dict) -> tuple[str, str]:
    from . import tracking

    run = tracking.client(uri).create_run(experiment_id, run_name=name, tags=tags)
    return run.info.run_id, run.info.artifact_uri


class EarlyRuns:
    """Each prepared job's run created (RUNNING) by a forked helper while the launcher
    prepares the next jobs, on the core that would be idle; ``take`` hands a job its run
    (``pipeline.start`` otherwise). A job with ``skip_finished`` is not created early (it
    may be skipped); nor on one core, without fork, or on a store a forked process cannot
    write to. Should the helper fail, the job's run is created where it is taken, which
    raises the store's own error, if any."""

    def __init__(self) -> None:
        self.pool = None
        self.futures: dict = {}  # id(job) -> future of (run_id, artifact_uri)
        self.off = _cores() < 2 or not hasattr(os, "fork")

    def submit(self, job: Job) -> None:
        if self.off or job.uri is None or job.cfg.tracking.skip_finished:
            return
        from . import processes, tracking

        try:
            if self.pool is None:
                if not tracking.writable_after_fork(job.uri):
                    self.off = True
                    return
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                                initializer=_helper_process, initargs=(True,))
                with processes.heartbeats.paused():  # its process is forked at this submit
                    self.futures[id(job)] = self.pool.submit(_create_run, job.uri,
                                                             job.experiment_id, job.name,
                                                             job.tags)
                return
            self.futures[id(job)] = self.pool.submit(_create_run, job.uri, job.experiment_id,
                                                     job.name, job.tags)
        except Exception:  # noqa: BLE001 - no helper (fork refused, pool broken): created later
            self.off = True

    def take(self, job: Job) -> bool:
        """Whether the job now has its run (created by the helper)."""
        future = self.futures.pop(id(job), None)
        if future is None:
            return False
        try:
            job.run_id, job.artifact_uri = future.result()
        except Exception:  # noqa: BLE001 - then pipeline.start creates it, or says why not
            return False
        return True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Helpers:
    """Forked processes that draw the figures of a group's runs (one per core; matplotlib
    takes ≈ 0.1 s a figure, most of a plotted sweep's time) and write each run's batch of
    store rows (at most MAX_STORE_WRITERS; ≈ 75 µs an ORM row, most of an unplotted sweep's
    time), while this process writes the runs' other files and ends each run in job order.

    A run's batch is computed here, before the fork, and handed over only once the run's
    files and artifacts are in (``log``), so a run that fails before then has no rows but its
    params, as alone. Should a helper die, or a pool not start, this process does the task
    itself (the store drops rows it already holds). Linux (fork) and two cores or more;
    otherwise, and for a store that a forked process cannot write to
    (``tracking.writable_after_fork``), each run draws and logs as it finishes."""

    def __init__(self, tasks: dict):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from . import processes

        _TASKS[:] = list(tasks.values())
        self.index = {i: k for k, i in enumerate(tasks)}
        self.figures: dict = {}  # task index -> future of its figures
        self.batches: dict = {}  # task index -> future of its store batch
        self.done: dict = {}     # (task index, part) -> what doing it raised, or None
        self.pools: list = []
        draw = [k for k, (figures, _) in enumerate(_TASKS) if figures is not None]
        logs = sum(batch is not None for _, batch in _TASKS)
        if draw:
            from . import plots  # noqa: F401 - imported once here, inherited by the processes
        fork = multiprocessing.get_context("fork")
        # every process is forked at its pool's first submit, while no heartbeat writes
        with processes.heartbeats.paused():
            self.store = None
            if logs:
                self.store = ProcessPoolExecutor(min(MAX_STORE_WRITERS, _cores(), logs),
                                                 mp_context=fork, initializer=_helper_process,
                                                 initargs=(True,))
                self.pools.append(self.store)
                self.store.submit(_started)
            if draw:
                pool = ProcessPoolExecutor(min(len(draw), _cores()), mp_context=fork,
                                           initializer=_helper_process, initargs=(False,))
                self.pools.append(pool)
                self.figures = {k: pool.submit(_draw, k) for k in draw}

    @classmethod
    def start(cls, jobs, todo, results, diags, claims) -> Optional["_Helpers"]:
        if _cores() < 2 or not hasattr(os, "fork"):
            return None
        from . import tracking

        tasks = {}
        for i, result, diag, claim in zip(todo, results, diags, claims):
            job = jobs[i]
            if isinstance(result, BaseException):
                continue
            figures = batch = None
            if job.cfg.tracking.plots:
                figures = (pipeline.partial_plots(job.out_dir), job.plan.objective, result,
                           diag, pipeline.run_name(job.cfg, job.plan))
            if job.uri is not None and tracking.writable_after_fork(job.uri):
                try:
                    batch = (job.uri, job.run_id,
                             pipeline.store_batch(job, result, diag, claim, with_params=True))
                except Exception:  # noqa: BLE001 - then finishing the job raises it
                    pass
            if figures is not None or batch is not None:
                tasks[i] = (figures, batch)
        if len(tasks) < 2:
            return None
        try:
            return cls(tasks)
        except Exception:  # noqa: BLE001 - no processes (fork refused): each job does its own
            _TASKS.clear()
            return None

    def _outcome(self, k: int, part: int, future) -> Optional[BaseException]:
        """What task k's ``part`` (0 figures, 1 store batch) raised, once it is over."""
        from concurrent.futures.process import BrokenProcessPool

        if (k, part) not in self.done:
            here = future is None  # never handed over (the pool was broken)
            error = None
            if not here:
                try:
                    future.result()
                except BrokenProcessPool:  # a helper died (e.g. out of memory)
                    here = True
                except Exception as e:  # noqa: BLE001 - the job's, raised where it waits
                    error = e
            if here:
                try:
                    (_draw if part == 0 else _log)(k)
                except Exception as e:  # noqa: BLE001
                    error = e
            self.done[(k, part)] = error
        return self.done[(k, part)]

    def drawn(self, i: int) -> Optional[Callable[[], None]]:
        """Waits for job ``i``'s figures and raises what drawing them raised; None when this
        process draws them."""
        k = self.index.get(i)
        if k not in self.figures:
            return None

        def wait() -> None:
            error = self._outcome(k, 0, self.figures[k])
            if error is not None:
                raise error
        return wait

    def logger(self, i: int) -> Optional[Callable[[], None]]:
        """Hands job ``i``'s store batch to a helper (see ``pipeline.finish``); None when
        this process logs it."""
        k = self.index.get(i)
        if k is None or _TASKS[k][1] is None:
            return None

        def hand_over() -> None:
            try:
                self.batches[k] = self.store.submit(_log, k)
            except Exception:  # noqa: BLE001 - a broken pool: _outcome logs it here
                self.batches[k] = None
        return hand_over

    def logged(self, i: int, wait: bool = True) -> tuple[bool, Optional[BaseException]]:
        """(whether job ``i``'s batch is written, what writing it raised); without ``wait``,
        (False, None) while a helper still writes it. A batch never handed over counts as
        written (this process logged it, or the job failed before)."""
        k = self.index.get(i)
        if k not in self.batches:
            return True, None
        future = self.batches[k]
        if not wait and future is not None and not future.done():
            return False, None
        return True, self._outcome(k, 1, future)

    def settle(self, i: int) -> None:
        """Wait until job ``i``'s figures are over, whatever they raised (before its run
        ends, nothing of its own is still being written)."""
        k = self.index.get(i)
        if k in self.figures:
            self._outcome(k, 0, self.figures[k])

    def close(self) -> None:
        """Stop; a run that did not finish leaves no half-drawn artifacts folder (a finished
        one has renamed its own)."""
        import shutil

        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)
        for figures, _ in _TASKS:
            if figures is not None:
                shutil.rmtree(Path(figures[0]).parent, ignore_errors=True)
        _TASKS.clear()


def run_group(jobs: Sequence[Job], label: str = "group 1/1", out=None,
              early: Optional[EarlyRuns] = None) -> list[Union[Outcome, BaseException]]:
    """Descend the jobs of one group together; then files, tracking and a line per job.

    Every tracked job's run is created (RUNNING) before the descent and ended on its own:
    FINISHED, or FAILED when its own finishing raises (the others go on), or KILLED for every
    run still open on Ctrl-C or SIGTERM; ``early``: the runs created while the jobs were
    prepared. Should the batched descent itself raise, each job is
    descended alone, so that an error fails only the job that causes it.
    """
    out = sys.stdout if out is None else out
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

                if early is None or not early.take(job):
                    pipeline.start(job)
                context = tracking.run_status(job.client, job.run_id)
                context.__enter__()
                status[i] = context
        plans = [jobs[i].plan for i in todo]
        monitors = [pipeline.sharpness_monitor(plan) for plan in plans]
        with threadpool_limits(1, user_api="blas"):
            try:
                if len(plans) == 1:  # as `gdexp run` descends it (its own progress line)
                    results = [pipeline._descend(plans[0], monitors[0])]
                else:
                    progress = GroupProgress(label, len(todo), plans[0].run_kwargs["max_steps"],
                                             stream=out)
                    results = descend_together(
                        plans, callback=progress,
                        rules=[update_rule(jobs[i].resolved) for i in todo], monitors=monitors)
            except Exception:  # noqa: BLE001 - then each job alone: only the guilty one fails
                results = []
                monitors = [pipeline.sharpness_monitor(plan) for plan in plans]  # fresh
                for plan, monitor in zip(plans, monitors):
                    try:
                        results.append(pipeline._descend(plan, monitor))
                    except Exception as e:  # noqa: BLE001
                        results.append(e)
            results, diags, claims = _diagnose_each(jobs, todo, list(results), monitors)
            helpers = _Helpers.start(jobs, todo, results, diags, claims)
            try:
                written: collections.deque = collections.deque()
                for i, result, monitor, diag, claim in zip(todo, results, monitors, diags,
                                                           claims):
                    written.append((i, _write_one(jobs[i], i, result, monitor, diag, claim,
                                                  helpers)))
                    _end_written(jobs, written, helpers, status, outcomes, out, wait=False)
                _end_written(jobs, written, helpers, status, outcomes, out, wait=True)
            finally:
                if helpers is not None:
                    helpers.close()
    except BaseException as e:
        # Ctrl-C, SIGTERM (KILLED) or a store failure (FAILED): every run still open ends
        for i in sorted(status):
            try:
                status[i].__exit__(type(e), e, e.__traceback__)
            except BaseException:  # noqa: BLE001 - keep closing the others
                pass
        raise
    return outcomes


def _diagnose_each(jobs, todo, results, monitors) -> tuple[list, list, list]:
    """Each descended job's diagnostics and checked claim; a job whose diagnostics or claim
    raise gets the error as its result (it alone fails)."""
    diags, claims = [], []
    for k, (i, result, monitor) in enumerate(zip(todo, results, monitors)):
        diag = claim = None
        if not isinstance(result, BaseException):
            job = jobs[i]
            try:
                diag = pipeline._diagnose(job.cfg, job.plan, result, monitor)
                claim = pipeline.check_claim(job.cfg, job.plan, result, diag)
            except Exception as e:  # noqa: BLE001 - one job's failure is that job's
                results[k] = e
        diags.append(diag)
        claims.append(claim)
    return results, diags, claims


def _write_one(job: Job, i: int, result, monitor, diag, claim,
               helpers: Optional[_Helpers]) -> Union[Outcome, BaseException]:
    """A job's files, artifacts and store rows (handed to a helper, or written here); its
    Outcome, or what raised (its figures are over either way)."""
    try:
        if isinstance(result, BaseException):
            raise result
        return pipeline.finish(job, result, monitor, with_params=True, diag=diag, claim=claim,
                               drawn=helpers.drawn(i) if helpers is not None else None,
                               logged=helpers.logger(i) if helpers is not None else None)
    except Exception as e:  # noqa: BLE001 - one job's failure is that job's
        if helpers is not None:  # nothing of its own is written after its run has ended
            helpers.settle(i)
        return e


def _end_written(jobs: Sequence[Job], written: collections.deque,
                 helpers: Optional[_Helpers], status: dict, outcomes: list, out,
                 wait: bool) -> None:
    """End the runs of the written jobs in job order, as far as their store batches are in
    (every one, with ``wait``): a job runs on while the next one's files are written."""
    while written:
        i, outcome = written[0]
        if helpers is not None and not isinstance(outcome, BaseException):
            done, error = helpers.logged(i, wait=wait)
            if not done:
                return
            if error is not None:
                outcome = error
        written.popleft()
        _end_one(jobs[i], i, outcome, status, outcomes, out)


def _end_one(job: Job, i: int, outcome, status: dict, outcomes: list, out) -> None:
    """A job's run ended FINISHED with its result line, or FAILED (with its params) with the
    error's first line."""
    context = status.pop(i, None)
    outcomes[i] = outcome
    if isinstance(outcome, BaseException):
        e = outcome
        if context is not None:
            try:  # a failed run still says what it was (finish logs params last)
                pipeline.log_params(job)
            except Exception:  # noqa: BLE001 - the store may be what failed
                pass
            context.__exit__(type(e), e, e.__traceback__)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"{job.lead}{job.name}: failed: {type(e).__name__}: {first}", file=out,
              flush=True)
        return
    if context is not None:
        context.__exit__(None, None, None)
    pipeline.announce(job, outcome, out)


def sweep_value(job: Job, outcome: Outcome) -> float:
    """What a sweeper minimises for this job (as `gdexp run` returns it)."""
    from .config import sweep_metric

    return outcome.sweep_value(sweep_metric(job.cfg), int(job.cfg.stop.max_steps))
