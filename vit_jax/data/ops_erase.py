"""Random erasing as a pp op: ``random_erase(0.25)`` (Zhong et al. 2020, as timm and DeiT use it).

timm's ``RandomErasing`` (DeiT's ``reprob=0.25``, ``remode='pixel'``, one box): with probability
``p`` a box of area ``area_min``…``area_max`` % of the image (uniform) and aspect ratio
``aspect_min``…1/``aspect_min`` (log-uniform) is placed uniformly where it fits (10 tries, else
nothing is erased) and filled with standard-normal noise: one value per pixel and channel
(``mode="pixel"``), one per channel (``"channel"``, timm's ``'rand'``) or zeros (``"const"``).
The noise is N(0, 1) of the *normalised* image, so the op goes after ``value_range`` (timm
applies it after ``Normalize``); uint8 input is an error.
"""

from __future__ import annotations

import math

import numpy as np

from vit_jax.checks import is_number
from vit_jax.data.errors import DataError
from vit_jax.data.registry import register

MODES = ("pixel", "channel", "const")
TRIES = 10


@register("random_erase")
class RandomErase:
    """``random_erase(p=0.25, area_min=2, area_max=33.3, aspect_min=0.3, mode="pixel")``:
    see the module docstring (areas in percent of the image, as ``inception_crop``'s)."""

    random = True

    def __init__(self, p: float = 0.25, area_min: float = 2, area_max: float = 100 / 3,
                 aspect_min: float = 0.3, mode: str = "pixel"):
        if not (is_number(p) and 0 <= p <= 1):
            raise ValueError(f"random_erase: p must be in [0, 1], got {p!r}")
        if not (is_number(area_min) and is_number(area_max) and 0 < area_min <= area_max <= 100):
            raise ValueError(f"random_erase: need 0 < area_min <= area_max <= 100 (percent), "
                             f"got {area_min!r}, {area_max!r}")
        if not (is_number(aspect_min) and 0 < aspect_min <= 1):
            raise ValueError(f"random_erase: aspect_min must be in (0, 1] (the range is "
                             f"aspect_min...1/aspect_min), got {aspect_min!r}")
        if mode not in MODES:
            raise ValueError(f"random_erase: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.p, self.area = float(p), (area_min / 100, area_max / 100)
        self.log_aspect = (math.log(aspect_min), -math.log(aspect_min))
        self.mode = mode

    def __call__(self, example, rng):
        image = example["image"]
        if image.dtype == np.uint8:
            raise DataError("random_erase fills with N(0, 1) noise of a normalised image: put it "
                            "after value_range")
        if rng.uniform() >= self.p:
            return example
        box = self.box(image.shape[0], image.shape[1], rng)
        if box is None:
            return example
        top, left, h, w = box
        channels = image.shape[2]
        fill = {"pixel": lambda: rng.standard_normal((h, w, channels)),
                "channel": lambda: rng.standard_normal((1, 1, channels)),
                "const": lambda: np.zeros((1, 1, channels))}[self.mode]()
        image = image.copy()
        image[top:top + h, left:left + w] = fill.astype(image.dtype)
        return {**example, "image": image}

    def box(self, height: int, width: int,
            rng: np.random.Generator) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) of the box to erase, or None when no try fits (timm's rule: the
        box must be strictly smaller than the image on both sides)."""
        for _ in range(TRIES):
            area = height * width * rng.uniform(*self.area)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < h < height and 0 < w < width:
                return (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)),
                        h, w)
        return None
