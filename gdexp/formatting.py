"""How numbers are written for people: report tables, run labels and figure legends alike."""
from __future__ import annotations

from typing import Optional

# Whole numbers below this print in full (steps, counts); everything else to a fixed number of
# significant digits, so that a value prints the same way in every table (2.147e+12, never
# 2147483648000).
WHOLE_BELOW = 1e6


def number(x: Optional[float], digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits, whole numbers below WHOLE_BELOW in full."""
    if x is None:
        return "-"
    if float(x).is_integer() and abs(x) < WHOLE_BELOW:
        return str(int(x))
    return f"{x:.{digits}g}"


def distinct(values, least: int = 3, most: int = 6) -> list[str]:
    """Each value with the fewest significant digits (at least ``least``, at most ``most``)
    that still tells every two different values apart: legend labels read ``lr=0.182`` beside
    ``lr=0.195``, not ``lr=0.1818181818181818``, and never show two rates as one."""
    values = [float(v) for v in values]
    for digits in range(least, most + 1):
        shown = [number(v, digits) for v in values]
        if len(set(shown)) == len(set(values)):
            return shown
    return [number(v, most) for v in values]
