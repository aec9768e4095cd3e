"""Batch-level mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) that give the same
global batch on any process count.

Examples are mixed with their neighbour in fixed pairs (0<->1, 2<->3, ...) rather than with a
rolled batch: with an even per-process batch a pair never straddles two processes, so the
per-process batches still concatenate to exactly the single-process global batch. Everything
random is one draw per global step (from the seed): the mixing weight, folded to >= 0.5 so the
int "label" stays the dominant component of the mixed "labels", and for CutMix the box.

CutMix follows timm's definition: a box of area (1 - lam) of the image, its centre uniform over
the image and the box clipped at the borders, filled with the partner's pixels; the labels are
mixed by the box's actual area. With both mixup and CutMix on, each step is one or the other
with probability 1/2 (timm's ``switch_prob`` default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MIXUP_STREAM = 1  # Separates mixup draws from the per-example augmentation draws.


def _partners(n: int) -> np.ndarray:
    partner = np.arange(n) ^ 1
    partner[partner >= n] = n - 1  # An odd last row mixes with itself (i.e. stays unmixed).
    return partner


def mix_pairs(batch: dict[str, Any], lam: float) -> dict[str, Any]:
    """Mixes "image" and "labels" of each row with its pair partner (row index XOR 1)."""
    partner = _partners(batch["image"].shape[0])
    out = dict(batch)
    for key in ("image", "labels"):
        x = batch[key]
        a, b = np.asarray(lam, x.dtype), np.asarray(1 - lam, x.dtype)  # Stay in float32.
        out[key] = x * a + x[partner] * b
    return out


def cut_box(lam: float, height: int, width: int, centre: tuple[float, float]
            ) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box of about (1 - lam) of the image around ``centre``
    (fractions of height and width), clipped to the image."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(centre[0] * height), int(centre[1] * width)
    return (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height),
            max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))


def cut_pairs(batch: dict[str, Any], box: tuple[int, int, int, int]) -> dict[str, Any]:
    """Pastes the pair partner's pixels into ``box`` of every image; "labels" are mixed by the
    share of the image each one shows."""
    top, bottom, left, right = box
    image = batch["image"]
    partner = _partners(image.shape[0])
    out = dict(batch)
    out["image"] = image.copy()
    out["image"][:, top:bottom, left:right] = image[partner, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (image.shape[1] * image.shape[2])
    labels = batch["labels"]
    out["labels"] = labels * np.asarray(kept, labels.dtype) + labels[partner] * np.asarray(
        1 - kept, labels.dtype)
    return out


class Mixup:
    """grain `map_with_index` transform on batches: index = step of the global batch. Mixup with
    Beta(``alpha``), CutMix with Beta(``cutmix_alpha``); 0 turns either off."""

    def __init__(self, alpha: float, seed: int, cutmix_alpha: float = 0.0):
        if alpha < 0 or cutmix_alpha < 0 or not (alpha or cutmix_alpha):
            raise ValueError(f"mixup alpha and cutmix alpha must be >= 0 and one > 0, got "
                             f"{alpha} and {cutmix_alpha}")
        self.alpha, self.cutmix_alpha, self.seed = float(alpha), float(cutmix_alpha), int(seed)

    def draw(self, step: int) -> tuple[str, float, tuple[float, float]]:
        """(``"mixup"`` or ``"cutmix"``, the weight >= 0.5, the box centre) of ``step``."""
        rng = np.random.default_rng([self.seed, _MIXUP_STREAM, step])
        cutmix = self.cutmix_alpha > 0 and (self.alpha == 0 or rng.random() < 0.5)
        alpha = self.cutmix_alpha if cutmix else self.alpha
        lam = rng.beta(alpha, alpha)
        centre = (float(rng.random()), float(rng.random()))
        return ("cutmix" if cutmix else "mixup"), float(max(lam, 1 - lam)), centre

    def weight(self, step: int) -> float:
        return self.draw(step)[1]

    def __call__(self, step: int, batch: dict[str, Any]) -> dict[str, Any]:
        kind, lam, centre = self.draw(step)
        if kind == "mixup":
            return mix_pairs(batch, lam)
        _, height, width = batch["image"].shape[:3]
        return cut_pairs(batch, cut_box(lam, height, width, centre))
