"""RandAugment as a pp op: ``randaug(2, 10)`` (Cubuk et al. 2019), on uint8 HWC images.

We follow big_vision (``big_vision/pp/autoaugment.py``, itself TensorFlow's EfficientNet/TPU
implementation), the one its ``vit_s16_i1k`` baseline was trained with:

- for each of ``num_layers`` layers, one op drawn uniformly from 16 (AutoContrast, Equalize,
  Invert, Rotate, Posterize, Solarize, Color, Contrast, Brightness, Sharpness, ShearX, ShearY,
  TranslateX, TranslateY, Cutout, SolarizeAdd), always applied;
- magnitudes on a 0…10 scale: rotate ±30°·m/10, shear ±0.3·m/10, translate ±``translate``·m/10
  pixels (100 for ImageNet at 224²), Cutout a square of side 2·``cutout``·m/10 (40) at a random
  centre, the four enhancements a factor 0.1 + 1.8·m/10 (1 = unchanged; the factor is not
  negated), Posterize keeping ⌊4·m/10⌋ bits, Solarize above ⌊256·m/10⌋, SolarizeAdd adding
  ⌊110·m/10⌋ below 128; the geometric ops take a random sign and fill with grey 128.

``ops="timm"`` follows timm's ``rand-m{m}`` instead: 15 ops (no Cutout), each applied with
probability 0.5, translations relative to the image (±0.45·m/10 of its side); the level
functions otherwise agree. Two more of timm's options (DeiT trains with ``rand-m9-mstd0.5-inc1``,
i.e. ``randaug(2, 9, ops="timm", mstd=0.5, increasing=True)``): ``mstd`` draws each applied op's
magnitude from N(m, mstd²), clipped to 0…10; ``increasing`` makes every magnitude-dependent op
stronger as m grows: Posterize keeps 4 − ⌊4·m/10⌋ bits, Solarize inverts above 256 − ⌊256·m/10⌋,
and the enhancements take the factor 1 ± 0.9·m/10 (random sign, at least 0.1). Geometric ops fill
with grey 128 in both modes (timm's ImageNet transforms fill with the mean colour instead).

Each op below is a plain function of a uint8 array with the arithmetic of its definition (float
products truncated to uint8, as TensorFlow's casts do); 1-channel images work with every op
(Color is then the identity).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vit_jax.checks import is_int, is_number
from vit_jax.data.errors import DataError
from vit_jax.data.registry import register

MAX_LEVEL = 10.0
FILL = 128  # grey, for pixels a geometric op or Cutout uncovers


# ----------------------------------------------------------------------------- the ops


def blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """``degenerate + factor·(image − degenerate)``: factor 1 is the image, 0 the degenerate,
    above 1 an extrapolation (clipped to 0…255), then truncated to uint8."""
    if factor == 0.0:
        return degenerate.astype(np.uint8)
    if factor == 1.0:
        return image
    a, b = degenerate.astype(np.float32), image.astype(np.float32)
    out = a + np.float32(factor) * (b - a)
    return np.clip(out, 0.0, 255.0).astype(np.uint8)


def grey(image: np.ndarray) -> np.ndarray:
    """Luma (0.299 R + 0.587 G + 0.114 B, truncated), broadcast back to the image's channels."""
    if image.shape[-1] == 1:
        return image
    luma = image.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    return np.repeat(luma.astype(np.uint8)[..., None], image.shape[-1], axis=-1)


def autocontrast(image: np.ndarray) -> np.ndarray:
    """Each channel stretched linearly so its min is 0 and its max 255 (flat channels kept)."""
    out = image.copy()
    for c in range(image.shape[-1]):
        channel = image[..., c].astype(np.float32)
        lo, hi = channel.min(), channel.max()
        if hi > lo:
            scale = 255.0 / (hi - lo)
            out[..., c] = np.clip((channel - lo) * scale, 0, 255).astype(np.uint8)
    return out


def equalize(image: np.ndarray) -> np.ndarray:
    """PIL's ``ImageOps.equalize`` per channel: a lookup table from the cumulative histogram,
    step = (pixels − count of the last occupied level) // 255; step 0 leaves a channel as is."""
    out = image.copy()
    for c in range(image.shape[-1]):
        channel = image[..., c]
        histogram = np.bincount(channel.ravel(), minlength=256)
        occupied = histogram[histogram > 0]
        step = (occupied.sum() - occupied[-1]) // 255
        if step == 0:
            continue
        lut = (np.cumsum(histogram) + step // 2) // step
        lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255).astype(np.uint8)
        out[..., c] = lut[channel]
    return out


def invert(image: np.ndarray) -> np.ndarray:
    return 255 - image


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    """Keeps the ``bits`` most significant bits of every value."""
    shift = 8 - bits
    return ((image >> shift) << shift).astype(np.uint8)


def solarize(image: np.ndarray, threshold: int) -> np.ndarray:
    """Values at or above ``threshold`` inverted."""
    return np.where(image < threshold, image, 255 - image).astype(np.uint8)


def solarize_add(image: np.ndarray, addition: int, threshold: int = 128) -> np.ndarray:
    """``addition`` added (clipped to 255) to values below ``threshold``."""
    added = np.clip(image.astype(np.int32) + addition, 0, 255).astype(np.uint8)
    return np.where(image < threshold, added, image)


def color(image: np.ndarray, factor: float) -> np.ndarray:
    """Saturation: blend of the image's grey version and the image."""
    return blend(grey(image), image, factor)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend of a flat image at the mean grey level (truncated) and the image."""
    mean = np.float32(grey(image)[..., 0].astype(np.float32).mean())
    return blend(np.full_like(image, int(mean)), image, factor)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend of black and the image."""
    return blend(np.zeros_like(image), image, factor)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend of a smoothed image (3×3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13 on the interior,
    truncated; border pixels unsmoothed) and the image."""
    h, w = image.shape[:2]
    if h < 3 or w < 3:
        return image
    x = image.astype(np.float32)
    smooth = 5.0 * x[1:-1, 1:-1]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                smooth = smooth + x[dy:h - 2 + dy, dx:w - 2 + dx]
    degenerate = image.copy()
    degenerate[1:-1, 1:-1] = np.clip(smooth / 13.0, 0, 255).astype(np.uint8)
    return blend(degenerate, image, factor)


def _affine(image: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """Output pixel (x, y) = input at (a·x + b·y + c, d·x + e·y + f), nearest, grey fill."""
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c]))
                for c in range(image.shape[-1])]
    size = (image.shape[1], image.shape[0])
    out = [np.asarray(ch.transform(size, Image.Transform.AFFINE, coefficients,
                                   Image.Resampling.NEAREST, fillcolor=FILL)) for ch in channels]
    return np.stack(out, axis=-1)


def shear_x(image: np.ndarray, level: float) -> np.ndarray:
    """Output (x, y) = input (x + level·y, y)."""
    return _affine(image, (1.0, level, 0.0, 0.0, 1.0, 0.0))


def shear_y(image: np.ndarray, level: float) -> np.ndarray:
    """Output (x, y) = input (x, level·x + y)."""
    return _affine(image, (1.0, 0.0, 0.0, level, 1.0, 0.0))


def translate_x(image: np.ndarray, pixels: float) -> np.ndarray:
    """Output (x, y) = input (x + pixels, y): the content moves left by ``pixels``."""
    return _affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0))


def translate_y(image: np.ndarray, pixels: float) -> np.ndarray:
    """Output (x, y) = input (x, y + pixels): the content moves up by ``pixels``."""
    return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels))


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotated counter-clockwise by ``degrees`` about the centre, nearest, grey fill."""
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c]))
                for c in range(image.shape[-1])]
    return np.stack([np.asarray(ch.rotate(degrees, Image.Resampling.NEAREST, fillcolor=FILL))
                     for ch in channels], axis=-1)


def cutout(image: np.ndarray, pad: int, centre: tuple[int, int]) -> np.ndarray:
    """Rows centre_y − pad … centre_y + pad − 1 (clipped to the image), likewise columns, set to
    grey."""
    cy, cx = centre
    out = image.copy()
    out[max(0, cy - pad):cy + pad, max(0, cx - pad):cx + pad] = FILL
    return out


# ----------------------------------------------------------------------------- RandAugment

BIG_VISION_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                  "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                  "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
TIMM_OPS = tuple(op for op in BIG_VISION_OPS if op != "Cutout")
OP_LISTS = {"big_vision": BIG_VISION_OPS, "timm": TIMM_OPS}
ENHANCE = {"Color": color, "Contrast": contrast, "Brightness": brightness,
           "Sharpness": sharpness}
SIGNED = {"Rotate": rotate, "ShearX": shear_x, "ShearY": shear_y}


@register("randaug")
class RandAugment:
    """``randaug(num_layers=2, magnitude=10, ops="big_vision", translate=100, cutout=40,
    mstd=0, increasing=False)``: see the module docstring (``translate``/``cutout`` in pixels at
    magnitude 10, big_vision's; ``mstd`` and ``increasing`` timm's)."""

    random = True

    def __init__(self, num_layers: int = 2, magnitude: float = 10, ops: str = "big_vision",
                 translate: float = 100, cutout: float = 40, mstd: float = 0,
                 increasing: bool = False):
        if not (is_int(num_layers) and num_layers >= 0):
            raise ValueError(f"randaug: num_layers must be an int >= 0, got {num_layers!r}")
        if not (is_number(magnitude) and 0 <= magnitude <= MAX_LEVEL):
            raise ValueError(f"randaug: magnitude must be in [0, 10], got {magnitude!r}")
        if ops not in OP_LISTS:
            raise ValueError(f"randaug: ops must be one of {sorted(OP_LISTS)}, got {ops!r}")
        for name, value in (("translate", translate), ("cutout", cutout)):
            if not (is_number(value) and value >= 0):
                raise ValueError(f"randaug: {name} must be a number >= 0 (pixels), got "
                                 f"{value!r}")
        if not (is_number(mstd) and mstd >= 0):
            raise ValueError(f"randaug: mstd must be a number >= 0, got {mstd!r}")
        if not isinstance(increasing, bool):
            raise ValueError(f"randaug: increasing must be True or False, got {increasing!r}")
        self.num_layers, self.magnitude, self.ops = num_layers, float(magnitude), ops
        self.translate, self.cutout = float(translate), float(cutout)
        self.mstd, self.increasing = float(mstd), increasing

    def __call__(self, example, rng):
        image = example["image"]
        if image.dtype != np.uint8:
            raise DataError(f"randaug takes uint8 images (put it before value_range), got "
                             f"{image.dtype}")
        names = OP_LISTS[self.ops]
        for _ in range(self.num_layers):
            name = names[int(rng.integers(len(names)))]
            if self.ops == "timm" and rng.uniform() >= 0.5:
                continue
            image = self.apply(name, image, rng)
        return {**example, "image": image}

    def apply(self, name: str, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Op ``name`` at this augmenter's magnitude (drawn around it with ``mstd``; random
        sign / centre from ``rng``)."""
        magnitude = self.magnitude
        if self.mstd:
            magnitude = min(max(rng.normal(magnitude, self.mstd), 0.0), MAX_LEVEL)
        level = magnitude / MAX_LEVEL
        if name in ENHANCE and self.increasing:
            return ENHANCE[name](image, max(0.1, 1.0 + _random_sign(0.9 * level, rng)))
        if name in ENHANCE:
            return ENHANCE[name](image, 0.1 + 1.8 * level)
        if name in SIGNED:
            amount = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3}[name] * level
            return SIGNED[name](image, _random_sign(amount, rng))
        if name in ("TranslateX", "TranslateY"):
            side = image.shape[1] if name == "TranslateX" else image.shape[0]
            pixels = 0.45 * side * level if self.ops == "timm" else self.translate * level
            move = translate_x if name == "TranslateX" else translate_y
            return move(image, _random_sign(pixels, rng))
        if name == "Cutout":
            centre = (int(rng.integers(image.shape[0])), int(rng.integers(image.shape[1])))
            return cutout(image, int(self.cutout * level), centre)
        if name == "Posterize":
            return posterize(image, 4 - int(4 * level) if self.increasing else int(4 * level))
        if name == "Solarize":
            return solarize(image, 256 - int(256 * level) if self.increasing else int(256 * level))
        if name == "SolarizeAdd":
            return solarize_add(image, int(110 * level))
        return {"AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert}[name](image)


def _random_sign(value: float, rng: np.random.Generator) -> float:
    return -value if rng.uniform() < 0.5 else value
