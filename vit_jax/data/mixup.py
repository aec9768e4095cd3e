"""Batch-level mixup (Zhang et al. 2018) that gives the same global batch on any process count.

Examples are mixed with their neighbour in fixed pairs (0<->1, 2<->3, ...) rather than with a
rolled batch: with an even per-process batch a pair never straddles two processes, so the
per-process batches still concatenate to exactly the single-process global batch. The mixing
weight is one draw per global step (from the seed), and is folded to >= 0.5 so the int "label"
stays the dominant component of the mixed "labels".
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MIXUP_STREAM = 1  # Separates mixup draws from the per-example augmentation draws.


def mix_pairs(batch: dict[str, Any], lam: float) -> dict[str, Any]:
    """Mixes "image" and "labels" of each row with its pair partner (row index XOR 1)."""
    n = batch["image"].shape[0]
    partner = np.arange(n) ^ 1
    partner[partner >= n] = n - 1  # An odd last row mixes with itself (i.e. stays unmixed).
    out = dict(batch)
    for key in ("image", "labels"):
        x = batch[key]
        a, b = np.asarray(lam, x.dtype), np.asarray(1 - lam, x.dtype)  # Stay in float32.
        out[key] = x * a + x[partner] * b
    return out


class Mixup:
    """grain `map_with_index` transform on batches: index = step of the global batch."""

    def __init__(self, alpha: float, seed: int):
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        self.alpha, self.seed = float(alpha), int(seed)

    def weight(self, step: int) -> float:
        rng = np.random.default_rng([self.seed, _MIXUP_STREAM, step])
        lam = rng.beta(self.alpha, self.alpha)
        return float(max(lam, 1 - lam))

    def __call__(self, step: int, batch: dict[str, Any]) -> dict[str, Any]:
        return mix_pairs(batch, self.weight(step))
