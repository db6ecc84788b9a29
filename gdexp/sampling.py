"""Mini-batch index sequences: pure functions of (seed, step, n_samples, batch_size, sampling[, start])."""
from __future__ import annotations

from typing import Optional

import numpy as np

SAMPLINGS = ("epoch", "replacement")
# shared: every start of a run steps on the same batches (compared on the same noise);
# per_start: start j has its own sequence (independent noise, e.g. a spread of SGD outcomes)
BATCHES = ("shared", "per_start")
# A stream of its own, so batch draws never coincide with the initial points drawn from `seed`.
_STREAM = 0xBA7C


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Batches per pass over the data; the last one is smaller when batch_size does not divide n."""
    return -(-n_samples // batch_size)


def _key(seed: int, when: int, start: Optional[int]) -> list[int]:
    # start 0's own sequence is the shared one: a one-start run is the same either way
    return [int(seed), _STREAM, int(when)] + ([int(start)] if start else [])


def batch_indices(seed: int, step: int, n_samples: int, batch_size: int,
                  sampling: str = "epoch", start: Optional[int] = None) -> np.ndarray:
    """The sorted sample indices of mini-batch ``step`` (of start ``start``'s own sequence;
    None: the sequence all starts share, which is also start 0's).

    ``epoch`` (PyTorch's ``shuffle=True``): one seeded permutation per epoch, cut into
    consecutive batches, so every sample is used exactly once per epoch. ``replacement``:
    ``batch_size`` i.i.d. uniform draws per step. Sorting changes no mean but fixes the order
    of summation: a batch of every sample sums exactly like the full batch.
    """
    if sampling == "epoch":
        epoch, j = divmod(int(step), steps_per_epoch(n_samples, batch_size))
        perm = np.random.default_rng(_key(seed, epoch, start)).permutation(n_samples)
        return np.sort(perm[j * batch_size:(j + 1) * batch_size])
    if sampling == "replacement":
        rng = np.random.default_rng(_key(seed, step, start))
        return np.sort(rng.integers(0, n_samples, batch_size))
    raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")


class BatchSampler:
    """``batch_indices`` for consecutive steps, computing each epoch's permutation once.

    ``starts``: that many sequences, start j's own (``batch_indices(..., start=j)``), returned
    as rows of (starts, batch_size) indices; None: the shared sequence, (batch_size,).
    ``streams`` (instead of ``seed`` and ``starts``): a (seed, start) pair per row, start None
    for the seed's shared sequence (jobs of other seeds descending side by side)."""

    def __init__(self, seed: int, n_samples: int, batch_size: int, sampling: str = "epoch",
                 starts: Optional[int] = None, streams=None):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if not 1 <= batch_size <= n_samples:
            raise ValueError(f"batch_size must be in [1, {n_samples}], got {batch_size}")
        self.n, self.b, self.sampling = n_samples, batch_size, sampling
        self.per_epoch = steps_per_epoch(n_samples, batch_size)
        self.shared = streams is None and starts is None
        if streams is None:
            streams = [(seed, None)] if starts is None else [(seed, j) for j in range(int(starts))]
        # start 0's sequence is the shared one (_key): one permutation serves both
        keys = [(int(sd), int(st) if st else None) for sd, st in streams]
        self.unique = list(dict.fromkeys(keys))
        where = {key: i for i, key in enumerate(self.unique)}
        self.rows = np.array([where[key] for key in keys])
        self._epoch, self._perms = None, None

    def __call__(self, step: int) -> np.ndarray:
        if self.sampling != "epoch":
            rows = [batch_indices(seed, step, self.n, self.b, self.sampling, start)
                    for seed, start in self.unique]
        else:
            epoch, j = divmod(int(step), self.per_epoch)
            if epoch != self._epoch:
                self._perms = [np.random.default_rng(_key(seed, epoch, start))
                               .permutation(self.n) for seed, start in self.unique]
                self._epoch = epoch
            rows = [np.sort(perm[j * self.b:(j + 1) * self.b]) for perm in self._perms]
        if self.shared:
            return rows[0]
        return np.stack(rows)[self.rows]
