"""Mini-batch index sequences: pure functions of (seed, step, n_samples, batch_size, sampling)."""
from __future__ import annotations

import numpy as np

SAMPLINGS = ("epoch", "replacement")
# A stream of its own, so batch draws never coincide with the initial points drawn from `seed`.
_STREAM = 0xBA7C


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Batches per pass over the data; the last one is smaller when batch_size does not divide n."""
    return -(-n_samples // batch_size)


def batch_indices(seed: int, step: int, n_samples: int, batch_size: int,
                  sampling: str = "epoch") -> np.ndarray:
    """The sorted sample indices of mini-batch ``step``.

    ``epoch`` (PyTorch's ``shuffle=True``): one seeded permutation per epoch, cut into
    consecutive batches, so every sample is used exactly once per epoch. ``replacement``:
    ``batch_size`` i.i.d. uniform draws per step. Sorting changes no mean but fixes the order
    of summation: a batch of every sample sums exactly like the full batch.
    """
    if sampling == "epoch":
        epoch, j = divmod(int(step), steps_per_epoch(n_samples, batch_size))
        perm = np.random.default_rng([int(seed), _STREAM, epoch]).permutation(n_samples)
        return np.sort(perm[j * batch_size:(j + 1) * batch_size])
    if sampling == "replacement":
        rng = np.random.default_rng([int(seed), _STREAM, int(step)])
        return np.sort(rng.integers(0, n_samples, batch_size))
    raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")


class BatchSampler:
    """``batch_indices`` for consecutive steps, computing each epoch's permutation once."""

    def __init__(self, seed: int, n_samples: int, batch_size: int, sampling: str = "epoch"):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if not 1 <= batch_size <= n_samples:
            raise ValueError(f"batch_size must be in [1, {n_samples}], got {batch_size}")
        self.seed, self.n, self.b, self.sampling = int(seed), n_samples, batch_size, sampling
        self.per_epoch = steps_per_epoch(n_samples, batch_size)
        self._epoch, self._perm = None, None

    def __call__(self, step: int) -> np.ndarray:
        if self.sampling != "epoch":
            return batch_indices(self.seed, step, self.n, self.b, self.sampling)
        epoch, j = divmod(int(step), self.per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, _STREAM, epoch]).permutation(self.n)
            self._epoch = epoch
        return np.sort(self._perm[j * self.b:(j + 1) * self.b])
