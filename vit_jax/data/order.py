"""Which example goes where: the epoch shuffle and the process shard of each global batch.

The global stream is a sequence of positions p = 0, 1, 2, ...; position p is example
`permutation(epoch)[p % n]` of epoch `p // n` (with r repeats, `permutation(epoch)[p % n // r]`,
copy `p % n % r`: r neighbouring positions, so one global batch, share an example), and global
batch `step` holds positions
[step * G, (step + 1) * G). Process j of P takes the j-th contiguous block of B = G / P rows of
every global batch, so the processes' batches are disjoint and concatenate (in process order) to
the global batch of a single-process run. All of this is a pure function of the seed, which is
what makes iterator state a single step counter.
"""

from __future__ import annotations

import numpy as np

_AUGMENT_STREAM = 0  # Per-example augmentation draws (mixup uses stream 1).


def global_position(local_position: int, batch_size: int, process_index: int, count: int) -> int:
    """Global stream position of this process's `local_position`-th example."""
    step, row = divmod(local_position, batch_size)
    return (step * count + process_index) * batch_size + row


def example_rng(seed: int, epoch: int, index: int, copy: int = 0) -> np.random.Generator:
    """The generator of an example's random ops: same (seed, epoch, index, copy) -> same draws
    (``copy``: which of a repeated example's copies; 0 keys exactly as before repeats existed)."""
    return np.random.default_rng([seed, _AUGMENT_STREAM, epoch, index] + ([copy] if copy else []))


class EpochOrder:
    """Position -> (epoch, example index), reshuffled every epoch by the seed.

    Holds the last two epochs' permutations: consecutive positions cross at most one epoch
    boundary, so this is one permutation per epoch per worker process.
    """

    def __init__(self, num_examples: int, seed: int, shuffle: bool = True, repeats: int = 1):
        if num_examples < 1:
            raise ValueError("cannot iterate over an empty split")
        self.n, self.seed, self.shuffle, self.repeats = num_examples, seed, shuffle, repeats
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.n)
        slot = offset // self.repeats
        if not self.shuffle:
            return epoch, slot
        return epoch, int(self.permutation(epoch)[slot])

    def copy(self, position: int) -> int:
        """Which copy of its example ``position`` is (0 without repeats)."""
        return position % self.n % self.repeats

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            rng = np.random.default_rng([self.seed, epoch])
            self._cache[epoch] = rng.permutation(self.n)
        return self._cache[epoch]
