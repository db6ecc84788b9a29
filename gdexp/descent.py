"""The runner: batched descent from many starts, with stopping rules and a bounded trace."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, NamedTuple, Optional

import numpy as np
from autograd import make_vjp

from .objectives import MAX_LISTED_MINIMA, Objective
from .optimizers import Optimizer
from .sampling import BatchSampler


class Status(Enum):
    """Why a start stopped: (outcome, rule, message), after scipy's status messages."""

    GRAD_TOL = ("converged", "grad_tol", "Converged: the gradient norm fell to grad_tol or below.")
    STEP_TOL = ("converged", "step_tol", "Converged: the step length fell to step_tol or below.")
    VALUE_TOL = ("converged", "value_tol", "Converged: the change in f fell to value_tol or below.")
    MAX_STEPS = ("max_steps", "max_steps", "Stopped: the step budget max_steps was used up.")
    NON_FINITE = ("diverged", "non_finite", "Diverged: f or its gradient became non-finite.")
    BOUND = ("diverged", "diverge_above", "Diverged: f rose above diverge_above.")

    @property
    def outcome(self) -> str:
        return self.value[0]

    @property
    def rule(self) -> str:
        return self.value[1]

    @property
    def message(self) -> str:
        return self.value[2]


# Integer codes used inside the loop (0 = still running); order = priority when several hold.
_CODES = (None, Status.NON_FINITE, Status.BOUND, Status.GRAD_TOL, Status.STEP_TOL,
          Status.VALUE_TOL, Status.MAX_STEPS)


class Armijo(NamedTuple):
    """Backtracking line search: shrink t until f(x + t·d) ≤ f(x) + c·t·gᵀd.

    For gradient descent d = −g, so the test reads f(x − t·g) ≤ f(x) − c·t·‖g‖²: the
    first-order Taylor decrease, scaled by c, made into a guarantee.
    """

    c: float = 1e-4
    shrink: float = 0.5
    max_iter: int = 30


class _Recorder:
    """Rows of per-step arrays kept in bounded memory.

    Every step is kept until ``capacity`` rows are full; then every other row is dropped and
    only steps that are multiples of the doubled stride are kept from then on. The rows stay
    evenly spaced and memory never exceeds ``capacity`` rows.
    """

    def __init__(self, capacity: int, shapes: dict[str, tuple], max_rows: Optional[int] = None):
        self.capacity = max(int(capacity), 4)
        self.stride = 1
        self.size = 0
        # A descent of max_steps updates adds at most max_steps rows before its final one, so
        # a budget beyond that is never filled: only what can be used is allocated.
        rows = self.capacity if max_rows is None else min(self.capacity, max(int(max_rows), 0))
        self.steps = np.empty(rows + 1, dtype=np.int64)  # +1 for the final row
        self.data = {k: np.empty((rows + 1,) + s) for k, s in shapes.items()}
        self._columns = tuple(self.data.values())

    def add(self, k: int, *values) -> None:
        """One row: a value per array, in the order of ``shapes``."""
        if k % self.stride:
            return
        if self.size == self.capacity:
            keep = slice(0, self.size, 2)
            n = len(range(*keep.indices(self.size)))
            self.steps[:n] = self.steps[keep]
            for arr in self.data.values():
                arr[:n] = arr[keep]
            self.size, self.stride = n, self.stride * 2
            if k % self.stride:
                return
        self._put(k, values)

    def close(self, k: int, *values) -> None:
        """Make sure the last step is the last row."""
        if self.size == 0 or self.steps[self.size - 1] != k:
            self._put(k, values)

    def _put(self, k, values):
        i = self.size
        self.steps[i] = k
        for arr, v in zip(self._columns, values):
            arr[i] = v
        self.size += 1

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"steps": self.steps[: self.size].copy()}
        out.update({k: v[: self.size].copy() for k, v in self.data.items()})
        return out


@dataclass(frozen=True)
class Trace:
    """Per-step records. ``steps`` indexes the rows of the curves, ``path_steps`` the path's.

    In a mini-batch run ``loss`` and ``grad_norm`` are the full-batch f and ‖∇f‖ on the
    evaluation steps only (``steps``), ``batch_loss`` the mini-batch loss of every step
    (``batch_steps``). ``evals`` holds the objective's own evaluations (test loss, accuracy)
    on ``eval_steps``.
    """

    steps: np.ndarray      # (m,)
    loss: np.ndarray       # (m, n)
    grad_norm: np.ndarray  # (m, n)
    lr: np.ndarray         # (m, n): the step size actually used at that step
    path_steps: np.ndarray  # (p,)
    path: np.ndarray       # (p, d, n)
    batch_steps: Optional[np.ndarray] = None  # (b,) mini-batch runs only
    batch_loss: Optional[np.ndarray] = None   # (b, n)
    eval_steps: Optional[np.ndarray] = None   # (e,) when an evaluate function was given
    evals: dict = field(default_factory=dict)  # name -> (e, n)

    @property
    def full_resolution(self) -> bool:
        return bool(np.all(np.diff(self.steps[:-1]) == 1)) if len(self.steps) > 2 else True


@dataclass(frozen=True)
class Result:
    """What a batched descent returns; every per-start array has its start along the last axis."""

    x0: np.ndarray           # (d, n)
    x: np.ndarray            # (d, n) final points
    f: np.ndarray            # (n,) final values
    grad_norm: np.ndarray    # (n,) final gradient norms
    steps: np.ndarray        # (n,) updates applied before stopping
    status: tuple            # (n,) Status
    lr: np.ndarray           # (n,) base learning rate per start
    evaluations: np.ndarray  # (n,) evaluations of f (gradient evaluations plus line-search trials)
    nearest: np.ndarray      # (n,) index into objective.minima of the nearest minimum (-1: none listed)
    distance: np.ndarray     # (n,) distance to that minimum (inf when none listed)
    is_global: np.ndarray    # (n,) whether that minimum is global
    basin: tuple             # (n,) "global" / "local" / "none" (not within basin_tol, or diverged)
    trace: Trace

    @property
    def n(self) -> int:
        return self.x.shape[1]

    @property
    def outcomes(self) -> tuple:
        return tuple(s.outcome for s in self.status)


def batched_value_and_grad(f: Callable) -> Callable:
    """(d, n) -> ((n,), (d, n)): all columns' values and gradients in one reverse pass.

    Columns do not interact, so pulling a cotangent of ones back through f gives every
    column's own gradient (the gradient of Σ_j f(x_j)) together with the values.
    Extra arguments (a mini-batch's indices) are passed on to f.
    """
    forward = make_vjp(f)

    def value_and_grads(x, *args):
        if x.shape[1] == 1:  # one start: autograd is ~15% cheaper on a (d,) point than on (d, 1)
            vjp, fx = forward(x[:, 0], *args)
            return np.reshape(fx, (1,)), vjp(np.ones_like(fx))[:, None]
        vjp, fx = forward(x, *args)
        return fx, vjp(np.ones_like(fx))

    return value_and_grads


# nearest_minima measures every final point against every listed minimum: at most this many
# (coordinate, start, minimum) differences at a time, so that 10^6 starts against Rastrigin's
# 121 minima need megabytes, not gigabytes.
DISTANCE_BLOCK = 1 << 22


def nearest_minima(objective: Objective, x: np.ndarray):
    """Index of, distance to, and globality of the nearest listed minimum for each column."""
    n = x.shape[1]
    if not objective.minima:
        return np.full(n, -1), np.full(n, np.inf), np.zeros(n, bool)
    centers = np.stack([m.x for m in objective.minima], axis=1)  # (d, k)
    block = max(1, DISTANCE_BLOCK // centers.size)
    idx = np.empty(n, dtype=np.int64)
    d = np.empty(n)
    for lo in range(0, n, block):
        cols = slice(lo, min(n, lo + block))
        with np.errstate(invalid="ignore", over="ignore"):
            diff = x[:, cols, None] - centers[:, None, :]
            dist = np.sqrt((diff ** 2).sum(axis=0))  # (columns, k)
        dist = np.where(np.isfinite(dist), dist, np.inf)
        idx[cols] = np.argmin(dist, axis=1)
        d[cols] = dist[np.arange(dist.shape[0]), idx[cols]]
    glob = np.array([objective.minima[i].is_global for i in idx])
    return idx, d, glob


def _rows(max_steps: int, budget: int, width: int) -> int:
    """Rows a _Recorder of ``budget`` values over rows of ``width`` values fills at most."""
    return min(max_steps + 2, max(budget // max(width, 1), 4) + 1)


def memory_needed(dim: int, n: int, *, max_steps: int, trace_budget: int, path_budget: int,
                  state_arrays: int, per_start: int) -> dict[str, int]:
    """Float64 values ``run`` holds at its peak, by part, before anything is allocated.

    ``state_arrays``: (d, n) arrays in the optimizer's state; ``per_start``: values per start
    of one evaluation of f and its gradient (the objective's Footprint). The recorders
    (see _Recorder) fill at most their budget or one row per step, and are copied once into
    the Result.
    """
    curve_rows = _rows(max_steps, trace_budget, n)
    path_rows = _rows(max_steps, path_budget, dim * n)
    return {
        # x, x0, x_new, the gradient, the step and its temporaries; per-start vectors
        "points and optimizer state": n * dim * (8 + state_arrays) + 32 * n,
        "evaluation of f and its gradient": n * per_start,
        "distances to minima": 3 * min(n * dim * MAX_LISTED_MINIMA, DISTANCE_BLOCK),
        "trace": 2 * 3 * n * curve_rows,
        "path": 2 * dim * n * path_rows,
    }


def _rule_codes(k, f, gn, f_prev, step_norm, *, max_steps, grad_tol, step_tol, value_tol,
                diverge_above) -> np.ndarray:
    """Per start, the code of the highest-priority rule that holds at step k (0: none)."""
    n = f.shape[0]
    rules = [(1, ~np.isfinite(f + gn)), (2, f > diverge_above)]
    if grad_tol > 0:
        rules.append((3, gn <= grad_tol))
    if k > 0 and step_tol > 0:
        rules.append((4, step_norm <= step_tol))
    if k > 0 and value_tol > 0:
        rules.append((5, np.abs(f - f_prev) <= value_tol))
    rules.append((6, np.full(n, k >= max_steps)))
    new = np.zeros(n, dtype=np.int8)
    for c, h in reversed(rules):  # the highest-priority rule is written last
        new[h] = c
    return new


class _Jobs:
    """The jobs of a batch (consecutive blocks of columns), each recorded as if it ran alone.

    A lone job of n starts keeps its curves in a recorder of ``trace_budget // n`` rows and
    its path in one of ``path_budget // (d n)`` rows, and stops recording at the step where
    its last start stops. Jobs whose recorders would have the same capacities share one
    (their rows are kept and thinned at the same steps while they run); when a job's last
    start stops, its rows so far plus that step's row are taken out as its own trace.
    ``batch_loss`` adds the mini-batch loss recorder, ``eval_names`` the one of the
    objective's own evaluations (held-out loss, accuracy).
    """

    def __init__(self, sizes, d, trace_budget, path_budget, max_steps, batch_loss=False,
                 eval_names=()):
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        n = int(self.bounds[-1])
        self.classes = {}
        self.job_class = []
        for j, nj in enumerate(sizes):
            # mini-batch jobs evaluate the full batch each on its own steps: one class each
            caps = (trace_budget[j] // nj, path_budget[j] // (d * nj), j if batch_loss else 0)
            self.classes.setdefault(caps, []).append(j)
            self.job_class.append(caps)
        self.recorders = {}
        for caps, members in self.classes.items():
            if len(self.classes) == 1:
                cols = slice(0, n)  # a view, not a copy, in the common case
            else:
                cols = np.concatenate([np.arange(self.bounds[j], self.bounds[j + 1])
                                       for j in members])
            m = n if isinstance(cols, slice) else cols.size
            self.recorders[caps] = [
                cols,
                _Recorder(caps[0], {"loss": (m,), "grad_norm": (m,), "lr": (m,)}, max_steps),
                _Recorder(caps[1], {"x": (d, m)}, max_steps),
                len(members),
                _Recorder(caps[0], {"batch_loss": (m,)}, max_steps + 1) if batch_loss else None,
                _Recorder(caps[0], {k: (m,) for k in eval_names}, max_steps + 1)
                if eval_names else None]
        # per job: position of its columns inside its class's recorder
        self.local = []
        for j, caps in enumerate(self.job_class):
            offset = 0
            for i in self.classes[caps]:
                if i == j:
                    break
                offset += self.bounds[i + 1] - self.bounds[i]
            self.local.append(slice(offset, offset + self.bounds[j + 1] - self.bounds[j]))
        self.running = np.ones(len(sizes), dtype=bool)
        self.final = [None] * len(sizes)

    def add(self, k, f, gn, lr, x, evaluating=True) -> None:
        """Step k's rows: the curves of the jobs ``evaluating`` (True, False or a column mask,
        see run_jobs) and every path."""
        for caps, (cols, curves, path, live, _, _) in self.recorders.items():
            if live:
                if evaluating is True or (evaluating is not False
                                          and evaluating[self.bounds[caps[2]]]):
                    curves.add(k, f[cols], gn[cols], lr[cols])
                path.add(k, x[:, cols])

    def add_batch_loss(self, k, fb) -> None:
        for cols, _, _, live, batches, _ in self.recorders.values():
            if live:
                batches.add(k, fb[cols])

    def add_evals(self, k, values: dict) -> None:
        for cols, _, _, live, _, evals in self.recorders.values():
            if live:
                evals.add(k, *(v[cols] for v in values.values()))

    def stop(self, active: np.ndarray, k, f, gn, lr, x, fb=None, evaluate=None) -> None:
        """Take out every running job whose last start has stopped (before step k's rows)."""
        left = np.add.reduceat(active, self.bounds[:-1]) if active.size else active
        for j in np.flatnonzero(self.running & (left == 0)):
            self.running[j] = False
            cols, curves, path, _, batches, evals = entry = self.recorders[self.job_class[j]]
            entry[3] -= 1
            own, mine = self.local[j], slice(self.bounds[j], self.bounds[j + 1])
            c, p = curves.size, path.size
            extra = {}
            if batches is not None:
                steps, rows = _closed(batches, own, k, lambda: {"batch_loss": fb[mine]})
                extra.update(batch_steps=steps, batch_loss=rows["batch_loss"])
            if evals is not None:
                steps, rows = _closed(evals, own, k, lambda: evaluate(x[:, mine]))
                extra.update(eval_steps=steps, evals=rows)
            trace = Trace(
                np.append(curves.steps[:c], k),
                np.concatenate([curves.data["loss"][:c, own], f[None, mine]]),
                np.concatenate([curves.data["grad_norm"][:c, own], gn[None, mine]]),
                np.concatenate([curves.data["lr"][:c, own], lr[None, mine]]),
                np.append(path.steps[:p], k),
                np.concatenate([path.data["x"][:p, :, own], x[None, :, mine]]), **extra)
            self.final[j] = (trace, x[:, mine].copy(), f[mine].copy(), gn[mine].copy())


def _jobs_with(columns: np.ndarray, job_of: np.ndarray):
    """The columns of every job that has one of ``columns``: a mask, or True for all."""
    hit = np.zeros(int(job_of[-1]) + 1, dtype=bool)
    hit[job_of[columns]] = True
    mask = hit[job_of]
    return True if mask.all() else mask


def _closed(recorder: _Recorder, own: slice, k: int, last: Callable[[], dict]):
    """A job's steps and rows of ``recorder``, with step k's row ``last()`` appended unless
    step k is there already."""
    m = recorder.size
    steps = recorder.steps[:m].copy()
    rows = {name: arr[:m, own].copy() for name, arr in recorder.data.items()}
    if m == 0 or steps[-1] != k:
        row = last()
        steps = np.append(steps, k)
        rows = {name: np.concatenate([v, np.asarray(row[name])[None]]) for name, v in rows.items()}
    return steps, rows


def run_jobs(objective: Objective, x0s, optimizer: Optimizer, lrs, *, max_steps: int = 1000,
             grad_tol: float = 0.0, step_tol: float = 0.0, value_tol: float = 0.0,
             diverge_above: float = np.inf, schedule: Optional[Callable[[int], float]] = None,
             line_search: Optional[Armijo] = None, basin_tol=1e-2,
             trace_budget=5_000_000, path_budget=2_000_000,
             callback: Optional[Callable] = None, batch_size: Optional[int] = None,
             sampling: str = "epoch", batch_seed: int = 0, batches: str = "shared",
             eval_every: Optional[int] = None,
             evaluate: Optional[Callable] = None) -> list[Result]:
    """Several jobs in ONE batched descent; job j's Result equals ``run`` on job j alone.

    ``x0s[j]`` (shape (d,) or (d, n_j)) and ``lrs[j]`` (a scalar or n_j rates) are job j's
    starts and rates; ``basin_tol``, ``trace_budget`` and ``path_budget`` are one value for
    all jobs or one per job. Every other argument is shared, as in ``run``; ``callback``
    sees the whole batch. Columns never interact (objectives are batch independent), each
    job is recorded as if alone (see ``_Jobs``), and its final values are taken at the
    step where its last start stopped, so nothing a job returns depends on its batch.
    Mini-batch jobs (``batch_seed`` and ``batches`` one value or one per job) each step on
    their own batches, as alone, and each evaluates the full batch on its own steps: the
    common evaluation steps, and those where the batch loss of one of its own starts is not
    finite.
    """
    blocks = [np.array(x, dtype=float) for x in x0s]
    blocks = [b[:, None] if b.ndim == 1 else b for b in blocks]
    sizes = [b.shape[1] for b in blocks]
    n_jobs = len(blocks)
    minibatch = batch_size is not None

    def per_job(value):
        return list(value) if isinstance(value, (list, tuple)) else [value] * n_jobs

    basin_tols, trace_budgets, path_budgets = (per_job(basin_tol), per_job(trace_budget),
                                               per_job(path_budget))
    x = np.concatenate(blocks, axis=1)
    d, n = x.shape
    x_start = x.copy()
    base_lr = np.concatenate([np.broadcast_to(np.asarray(lr, dtype=float), (nj,))
                              for lr, nj in zip(lrs, sizes)])
    vg = batched_value_and_grad(objective.f)
    state = optimizer.init(x)
    if minibatch:
        seeds, modes = per_job(batch_seed), per_job(batches)
        if n_jobs == 1 or (len(set(seeds)) == 1 and set(modes) == {"shared"}):
            sampler = BatchSampler(seeds[0], objective.n_samples, int(batch_size), sampling,
                                   starts=n if modes[0] == "per_start" else None)
        else:  # a row of batch indices per column: its job's sequence, or its start's own
            sampler = BatchSampler(0, objective.n_samples, int(batch_size), sampling,
                                   streams=[(sd, c if mode == "per_start" else None)
                                            for sd, mode, nj in zip(seeds, modes, sizes)
                                            for c in range(nj)])
        every = int(eval_every) if eval_every else sampler.per_epoch
    else:
        every = int(eval_every) if eval_every else max(1, max_steps // 200)
    eval_names = tuple(evaluate(x)) if evaluate is not None else ()

    jobs = _Jobs(sizes, d, trace_budgets, path_budgets, max_steps, minibatch, eval_names)
    # per column, its job's index: which jobs evaluate the full batch at a step (mini-batch)
    job_of = np.repeat(np.arange(n_jobs), sizes) if minibatch and n_jobs > 1 else None
    code = np.zeros(n, dtype=np.int8)
    steps = np.zeros(n, dtype=np.int64)
    trials = np.zeros(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    all_active = any_active = True
    stopped = False
    f_prev = step_norm = fb = None
    k = 0
    with np.errstate(all="ignore"):  # overflow is detected below, not warned about
        while True:
            if minibatch:
                idx = sampler(k)
                fb, g = vg(x, idx)
                jobs.add_batch_loss(k, fb)
                if k % every == 0 or k >= max_steps:
                    evaluating = True
                else:  # and where a batch loss is not finite: its job's starts (a mask)
                    bad = ~np.isfinite(fb)
                    evaluating = (bool(bad.any()) if job_of is None
                                  else _jobs_with(bad, job_of) if bad.any() else False)
                if evaluating is True:
                    f, g_full = vg(x)
                    gn = np.sqrt((g_full * g_full).sum(axis=0))
                elif evaluating is not False:  # some jobs only; the others keep their last
                    f_now, g_full = vg(x)
                    f = np.where(evaluating, f_now, f)
                    gn = np.where(evaluating, np.sqrt((g_full * g_full).sum(axis=0)), gn)
            else:
                f, g = vg(x)
                gn = np.sqrt((g * g).sum(axis=0))
                evaluating = True
            if eval_names and (k % every == 0 or k >= max_steps):
                jobs.add_evals(k, evaluate(x))
            # One cheap test per step: does some rule hold for an active start? Which rule, and
            # for which starts, is sorted out only when one does.
            ok = np.isfinite(f + gn) & (f <= diverge_above)
            if grad_tol > 0:
                ok &= gn > grad_tol
            if k > 0 and step_tol > 0:
                ok &= step_norm > step_tol
            if k > 0 and value_tol > 0:
                ok &= np.abs(f - f_prev) > value_tol
            checked = active & evaluating if isinstance(evaluating, np.ndarray) else active
            if evaluating is not False and (
                    k >= max_steps
                    or not (ok.all() if all_active and evaluating is True
                            else (ok | ~checked).all())):
                new = _rule_codes(k, f, gn, f_prev, step_norm, max_steps=max_steps,
                                  grad_tol=grad_tol, step_tol=step_tol, value_tol=value_tol,
                                  diverge_above=diverge_above)
                stopping = checked & (new > 0)
                code[stopping] = new[stopping]
                steps[stopping] = k
                active = code == 0
                all_active = False
                any_active = bool(active.any())
                stopped = bool(stopping.any())
            if callback is not None:
                callback(k, x, f, gn, active)
            lr_k = base_lr if schedule is None else base_lr * schedule(k)
            if stopped:
                jobs.stop(active, k, f, gn, lr_k, x, fb, evaluate)
                stopped = False
            if not any_active:
                break
            if line_search is None:
                step, state = optimizer.update(g, state, x, lr_k)
            else:
                direction, state = optimizer.update(g, state, x, 1.0)
                if minibatch:
                    lr_k, tried = _backtrack(lambda z: objective.f(z, idx), x, fb, g,
                                             direction, lr_k, active, line_search)
                else:
                    lr_k, tried = _backtrack(objective.f, x, f, g, direction, lr_k, active,
                                             line_search)
                trials += tried
                step = lr_k * direction
            jobs.add(k, f, gn, lr_k, x, evaluating)
            if evaluating is True:
                f_prev = f
            elif evaluating is not False:
                f_prev = np.where(evaluating, f, f_prev)
            x_new = x + step if all_active else np.where(active, x + step, x)
            if step_tol > 0:
                step_norm = np.sqrt(((x_new - x) ** 2).sum(axis=0))
            x = x_new
            k += 1
    evaluations = steps + 1 + trials  # one gradient evaluation per iterate, plus the trials
    results = []
    for j in range(n_jobs):
        cols = slice(jobs.bounds[j], jobs.bounds[j + 1])
        trace, xj, fj, gnj = jobs.final[j]
        status = tuple(_CODES[c] for c in code[cols])
        idx, dist, glob = nearest_minima(objective, xj)
        diverged = np.array([s.outcome == "diverged" for s in status])
        reached = (dist <= basin_tols[j]) & ~diverged
        basin = tuple("none" if not r else ("global" if gl else "local")
                      for r, gl in zip(reached, glob))
        results.append(Result(x0=x_start[:, cols].copy(), x=xj, f=fj, grad_norm=gnj,
                              steps=steps[cols].copy(), status=status,
                              lr=base_lr[cols].copy(), evaluations=evaluations[cols].copy(),
                              nearest=idx, distance=dist, is_global=glob, basin=basin,
                              trace=trace))
    return results


def run(objective: Objective, x0, optimizer: Optimizer, lr, *, max_steps: int = 1000,
        grad_tol: float = 0.0, step_tol: float = 0.0, value_tol: float = 0.0,
        diverge_above: float = np.inf, schedule: Optional[Callable[[int], float]] = None,
        line_search: Optional[Armijo] = None, basin_tol: float = 1e-2,
        trace_budget: int = 5_000_000, path_budget: int = 2_000_000,
        callback: Optional[Callable] = None, batch_size: Optional[int] = None,
        sampling: str = "epoch", batch_seed: int = 0, batches: str = "shared",
        eval_every: Optional[int] = None, evaluate: Optional[Callable] = None) -> Result:
    """Descend from every column of ``x0`` (shape (d,) or (d, n)) until each start stops.

    Per start the rules are checked on the current iterate x_k, in this order: diverged (f or
    ∇f non-finite, or f > ``diverge_above``), ‖∇f‖ ≤ ``grad_tol``, ‖x_k − x_{k−1}‖ ≤
    ``step_tol``, |f_k − f_{k−1}| ≤ ``value_tol``, k = ``max_steps``. A tolerance of 0
    disables its rule. A stopped start keeps its point while the others go on.

    ``lr`` is a scalar or one rate per start; ``schedule(k)`` multiplies it at step k;
    ``line_search`` backtracks from that rate. ``callback(k, x, f, grad_norm, active)``, if
    given, is called once per step. The curves keep at most ``trace_budget`` values and the
    path at most ``path_budget`` values (then thinned evenly, see ``_Recorder``).

    Mini-batch SGD (a learning objective, ``f(x, idx)``): with ``batch_size`` set, step k
    uses the gradient on the samples ``BatchSampler(batch_seed, n_samples, batch_size,
    sampling)(k)`` — the same batch for every start, or with ``batches="per_start"`` start
    j's own sequence (``batch_indices(..., start=j)``). The full-batch f and ∇f are evaluated
    every ``eval_every`` steps (default: once per epoch), at ``max_steps``, and whenever the
    batch loss is not finite; the stopping rules are checked on those evaluation steps only,
    on full-batch quantities (‖∇f‖, f against the previous evaluation, the last step's length).
    The callback then sees the latest evaluation's f and ‖∇f‖. ``evaluate(x) -> {name: (n,)}``
    (held-out loss, accuracy) is recorded every ``eval_every`` steps (full batch: default
    max_steps/200) and at the end, in ``trace.evals``.
    """
    return run_jobs(objective, [x0], optimizer, [lr], max_steps=max_steps, grad_tol=grad_tol,
                    step_tol=step_tol, value_tol=value_tol, diverge_above=diverge_above,
                    schedule=schedule, line_search=line_search, basin_tol=basin_tol,
                    trace_budget=trace_budget, path_budget=path_budget, callback=callback,
                    batch_size=batch_size, sampling=sampling, batch_seed=batch_seed,
                    batches=batches, eval_every=eval_every, evaluate=evaluate)[0]


def _backtrack(f, x, fx, g, direction, t0, active, ls: Armijo):
    """Per-column Armijo backtracking from ``t0``; returns the accepted t and the trials.

    Where the direction is not a descent direction (gᵀd ≥ 0, possible with momentum or
    Adam), it is replaced by −g in place, since no step along it can pass the test. A column
    whose ``max_iter`` trials all fail gets t = 0: no untested step is ever taken.
    """
    n = x.shape[1]
    slope = np.sum(g * direction, axis=0)
    uphill = slope >= 0
    if uphill.any():
        direction[:, uphill] = -g[:, uphill]
        slope = np.where(uphill, -np.sum(g * g, axis=0), slope)
    t = np.broadcast_to(np.asarray(t0, dtype=float), (n,)).copy()
    todo = active.copy()
    trials = np.zeros(n, dtype=np.int64)
    for _ in range(ls.max_iter):
        trials += todo
        f_new = f(x + t * direction)
        ok = np.isfinite(f_new) & (f_new <= fx + ls.c * t * slope)
        todo &= ~ok
        if not todo.any():
            break
        t = np.where(todo, t * ls.shrink, t)
    return np.where(todo, 0.0, t), trials
