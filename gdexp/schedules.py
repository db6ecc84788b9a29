"""Learning-rate schedules: pure callables ``k -> multiplier`` of the base rate.

Each factory validates its arguments once and returns a closure that only does a little
float arithmetic, since the runner calls it once per step; ``k`` counts steps from 0 and
the runner uses ``lr_k = lr · schedule(k)``. The decay schedules follow the
``torch.optim.lr_scheduler`` formulas written in closed form in k (StepLR, ExponentialLR,
CosineAnnealingLR held after its end); ``inverse_time`` is Keras' InverseTimeDecay with
decay_steps = 1 and no staircase.

Warm-up (every factory, ``warmup_steps = W``): the multiplier is

    m(k) = s(k) · min(1, (k + 1)/(W + 1))

so steps 0, 1, …, W − 1 use the fractions 1/(W+1), 2/(W+1), …, W/(W+1) of the
schedule's own value s(k), and from step W on the schedule is untouched. No step has a
zero rate, and W = 0 changes nothing. The warm-up multiplies the schedule on the same
clock (it does not delay it): ``step_size``, ``decay_steps`` etc. count from step 0, so
e.g. a cosine over the run's whole budget still ends at that budget. (optax's
``warmup_*_schedule`` instead starts at an ``init_value`` and shifts the decay to begin
after the warm-up.)
"""
from __future__ import annotations

import math
from typing import Callable

from .checks import integer, real

Schedule = Callable[[int], float]


def _with_warmup(s: Schedule, warmup_steps) -> Schedule:
    w = integer("warmup_steps", warmup_steps, 0)
    if w == 0:
        return s
    scale = 1.0 / (w + 1)

    def warmed(k):
        return s(k) * (k + 1) * scale if k < w else s(k)

    return warmed


def constant(warmup_steps: int = 0) -> Schedule:
    """m(k) = 1 (the base rate throughout), after the optional warm-up."""

    def s(k):
        return 1.0

    return _with_warmup(s, warmup_steps)


def step(step_size: int, gamma: float = 0.1, warmup_steps: int = 0) -> Schedule:
    """m(k) = gamma ** ⌊k / step_size⌋ (``torch.optim.lr_scheduler.StepLR``).

    The rate is multiplied by gamma at steps step_size, 2·step_size, …;
    step_size ≥ 1 (integer), gamma ∈ (0, 1].
    """
    n = integer("step_size", step_size, 1)
    gm = real("gamma", gamma, 0.0, 1.0, lo_open=True, hi_open=False)

    def s(k):
        return gm ** (k // n)

    return _with_warmup(s, warmup_steps)


def exponential(gamma: float, warmup_steps: int = 0) -> Schedule:
    """m(k) = gamma ** k (``torch.optim.lr_scheduler.ExponentialLR``); gamma ∈ (0, 1]."""
    gm = real("gamma", gamma, 0.0, 1.0, lo_open=True, hi_open=False)

    def s(k):
        return gm ** k

    return _with_warmup(s, warmup_steps)


def inverse_time(decay_rate: float, warmup_steps: int = 0) -> Schedule:
    """m(k) = 1 / (1 + decay_rate·k); decay_rate ≥ 0 (0 is constant).

    With decay_rate = 1/k₀ this is the classical Robbins–Monro rate ∝ 1/k for k ≫ k₀.
    """
    r = real("decay_rate", decay_rate, 0.0)

    def s(k):
        return 1.0 / (1.0 + r * k)

    return _with_warmup(s, warmup_steps)


def cosine(decay_steps: int, min_factor: float = 0.0, warmup_steps: int = 0) -> Schedule:
    """Cosine annealing from 1 to min_factor over decay_steps steps, then held.

        m(k) = min_factor + (1 − min_factor)·(1 + cos(π·k / decay_steps))/2   for k < decay_steps
        m(k) = min_factor                                                    for k ≥ decay_steps

    i.e. ``torch.optim.lr_scheduler.CosineAnnealingLR`` with T_max = decay_steps and
    eta_min = min_factor·lr, held at its minimum instead of rising again after T_max
    (optax ``cosine_decay_schedule`` with alpha = min_factor). decay_steps ≥ 1 (integer),
    min_factor ∈ [0, 1].
    """
    n = integer("decay_steps", decay_steps, 1)
    lo = real("min_factor", min_factor, 0.0, 1.0, hi_open=False)
    half = 0.5 * (1.0 - lo)
    w = math.pi / n

    def s(k):
        return lo + half * (1.0 + math.cos(w * k)) if k < n else lo

    return _with_warmup(s, warmup_steps)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step,
    "exponential": exponential,
    "inverse_time": inverse_time,
    "cosine": cosine,
}
