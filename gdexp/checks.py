"""Argument checks shared by the optimizer and schedule factories: one message format."""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def real(name: str, value, lo: float, hi: float = math.inf, *, lo_open: bool = False,
         hi_open: bool = True, why: str = "") -> float:
    """``value`` as a float, or a ValueError naming ``name``, the value and the allowed range."""
    left = "(" if lo_open else "["
    right = ")" if hi_open or hi == math.inf else "]"
    allowed = f"{left}{lo:g}, {'inf' if hi == math.inf else format(hi, 'g')}{right}"
    ok = isinstance(value, Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = (math.isfinite(v) and (v > lo if lo_open else v >= lo)
              and (v < hi if hi_open else v <= hi))
    if not ok:
        raise ValueError(f"{name} must be in {allowed}{why}, got {value!r}")
    return float(value)


def integer(name: str, value, lo: int) -> int:
    """``value`` as an int >= ``lo``, or a ValueError naming ``name`` and the value."""
    if not (isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))
            and value >= lo):
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def flag(name: str, value) -> bool:
    """``value`` as a bool, or a ValueError naming ``name`` and the value."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)
