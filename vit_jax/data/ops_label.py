"""Label ops of the pp language."""

from __future__ import annotations

import numpy as np

from vit_jax.data.errors import DataError
from vit_jax.data.registry import register


@register("onehot")
class OneHot:
    """int `key` -> float32 one-hot `key_result` of width `depth`, optionally label-smoothed.

    Smoothing moves `label_smoothing` of the mass uniformly over all classes, so rows still sum
    to 1. A label outside [0, depth) is an error: a wrong depth must not train silently.
    """

    label_only = True  # Prediction (unlabelled images) drops it: `Preprocess.without_label_ops`.

    def __init__(
        self,
        depth: int,
        label_smoothing: float = 0.0,
        key: str = "label",
        key_result: str = "labels",
    ):
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"onehot: depth must be a positive int, got {depth!r}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"onehot: label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.depth, self.key, self.key_result = depth, key, key_result
        self.off = np.float32(label_smoothing / depth)
        self.on = np.float32(1.0 - label_smoothing + label_smoothing / depth)

    def __call__(self, example, rng):
        label = int(example[self.key])
        if not 0 <= label < self.depth:
            raise DataError(
                f"onehot: label {label} is outside [0, {self.depth}); is depth the dataset's "
                f"number of classes?"
            )
        row = np.full((self.depth,), self.off, np.float32)
        row[label] = self.on
        return {**example, self.key_result: row}
