"""Image and patch sizes as users give them: ``16`` or ``(height, width)``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_pair(value: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``7`` -> ``(7, 7)``; ``(h, w)`` (tuple, list or 1-D array) stays; anything else, a
    bool or a non-positive size, is an error naming ``name``."""
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool)
                                 and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])
