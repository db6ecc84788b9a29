"""Update rules: each optimizer is a pair of pure functions (init, update)."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Optimizer(NamedTuple):
    """``init(x) -> state``; ``update(g, state, x, lr) -> (step, state)``.

    The runner applies ``x ← x + step``. Arrays are (d, n) batches; ``lr`` is a scalar or a
    (n,) vector of per-column rates, so broadcasting over the last axis does the rest.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any, Any], tuple[Any, Any]]


class EmptyState(NamedTuple):
    """State of an optimizer that keeps none."""


def gd() -> Optimizer:
    """Plain gradient descent: step = −lr·g."""

    def init(x):
        return EmptyState()

    def update(g, state, x, lr):
        return -lr * g, state

    return Optimizer(init, update)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "gd": gd,
}
