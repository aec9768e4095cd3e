"""Image ops of the pp language (numpy + PIL; images are HWC uint8 until `value_range`).

Each op is a small picklable class: `__init__` validates the pp-string arguments (so a bad string
fails when the pipeline is built, not in a worker), `__call__(example, rng)` transforms the
example's "image". Ops with `random = True` use `rng`, the per-example generator.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, UnidentifiedImageError

from vit_jax.data.errors import DataError
from vit_jax.data.registry import register
from vit_jax.sizes import as_pair

_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}


def _hw(size, op: str) -> tuple[int, int]:
    """`32` -> (32, 32); `(h, w)` -> (h, w); anything else is an argument error."""
    return as_pair(size, f"{op}: size")


def _method(method: str, op: str) -> Image.Resampling:
    if method not in _METHODS:
        raise ValueError(f"{op}: method must be one of {sorted(_METHODS)}, got {method!r}")
    return _METHODS[method]


def resize_image(image: np.ndarray, hw: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    """Resizes uint8 grey/RGB in one PIL call; anything else channel by channel."""
    if image.shape[:2] == hw:
        return image
    size = (hw[1], hw[0])  # PIL wants (width, height).
    if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        return np.asarray(pil.resize(size, method)).reshape(hw + (image.shape[-1],))
    dtype = np.uint8 if image.dtype == np.uint8 else np.float32  # PIL modes "L" and "F".
    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(dtype)).resize(size, method))
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(image.dtype)


@register("decode")
class Decode:
    """Encoded bytes -> uint8 (H,W,C). `channels`: None keeps grey as 1 and colour as 3.

    A PIL image takes the same mode conversion as decoded bytes, and an array (a TFDS Tensor
    feature, or an image given to `vit_jax.predict`) only gets its channel axis and count.
    """

    def __init__(self, channels: int | None = None):
        if channels not in (None, 1, 3):
            raise ValueError(f"decode: channels must be None, 1 or 3, got {channels!r}")
        self.channels = channels

    def __call__(self, example, rng):
        data = example["image"]
        if isinstance(data, np.ndarray):  # Already decoded.
            image = data if data.ndim == 3 else data[..., None]
            return {**example, "image": _set_channels(image, self.channels)}
        if isinstance(data, Image.Image):
            return {**example, "image": _from_pil(data, self.channels)}
        try:
            with Image.open(io.BytesIO(data)) as pil:
                pil.load()
                image = _from_pil(pil, self.channels)
        except UnidentifiedImageError as e:  # Its message shows a BytesIO's address.
            raise DataError("decode: cannot decode image: not in a format PIL reads "
                            "(PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from e
        except Exception as e:
            raise DataError(f"decode: cannot decode image: {type(e).__name__}: {e}") from e
        return {**example, "image": image}


def _from_pil(pil: Image.Image, channels: int | None) -> np.ndarray:
    mode = _target_mode(pil.mode, channels)
    image = np.asarray(pil if pil.mode == mode else pil.convert(mode))
    return image if image.ndim == 3 else image[..., None]


def _target_mode(mode: str, channels: int | None) -> str:
    if channels == 1 or (channels is None and mode in ("1", "L", "LA", "I", "I;16", "F")):
        return "L"
    return "RGB"


def _set_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    if channels is None or image.shape[-1] == channels:
        return image
    if channels == 3:
        return ToRGB()({"image": image}, None)["image"]
    grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(grey)[..., None].astype(image.dtype)


@register("to_rgb")
class ToRGB:
    """Grey (1 channel) -> 3 channels by repetition; RGBA -> RGB; RGB unchanged."""

    def __call__(self, example, rng):
        image = example["image"]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        elif image.shape[-1] == 4:
            image = image[..., :3]
        elif image.shape[-1] != 3:
            raise DataError(f"to_rgb: expected 1, 3 or 4 channels, got shape {image.shape}")
        return {**example, "image": image}


@register("resize")
class Resize:
    """Resize to `size` (int: square, or (h, w)); aspect ratio is not kept."""

    def __init__(self, size, method: str = "bilinear"):
        self.hw = _hw(size, "resize")
        self.method = _method(method, "resize")

    def __call__(self, example, rng):
        return {**example, "image": resize_image(example["image"], self.hw, self.method)}


@register("resize_small")
class ResizeSmall:
    """Resize so the shorter side is `size`, keeping aspect ratio (before a central crop)."""

    def __init__(self, size: int, method: str = "bilinear"):
        self.size = _hw(size, "resize_small")[0]
        self.method = _method(method, "resize_small")

    def __call__(self, example, rng):
        image = example["image"]
        h, w = image.shape[:2]
        scale = self.size / min(h, w)
        hw = (max(1, round(h * scale)), max(1, round(w * scale)))
        return {**example, "image": resize_image(image, hw, self.method)}


def _crop(image: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    return image[top : top + h, left : left + w]


def _check_fits(image: np.ndarray, hw: tuple[int, int], op: str) -> None:
    if image.shape[0] < hw[0] or image.shape[1] < hw[1]:
        raise DataError(
            f"{op}: crop {hw} is larger than the image {image.shape[:2]}; resize first "
            f"(e.g. 'resize_small({max(hw)})|{op}(...)')"
        )


@register("central_crop")
class CentralCrop:
    def __init__(self, size):
        self.hw = _hw(size, "central_crop")

    def __call__(self, example, rng):
        image = example["image"]
        _check_fits(image, self.hw, "central_crop")
        top = (image.shape[0] - self.hw[0]) // 2
        left = (image.shape[1] - self.hw[1]) // 2
        return {**example, "image": _crop(image, top, left, *self.hw)}


@register("random_crop")
class RandomCrop:
    """Random `size` crop, after zero-padding by `pad` pixels on each side (CIFAR-style)."""

    random = True

    def __init__(self, size, pad: int = 0):
        self.hw = _hw(size, "random_crop")
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f"random_crop: pad must be a non-negative int, got {pad!r}")
        self.pad = pad

    def __call__(self, example, rng):
        image = example["image"]
        if self.pad:
            image = np.pad(image, ((self.pad, self.pad), (self.pad, self.pad), (0, 0)))
        _check_fits(image, self.hw, "random_crop")
        top = int(rng.integers(0, image.shape[0] - self.hw[0] + 1))
        left = int(rng.integers(0, image.shape[1] - self.hw[1] + 1))
        return {**example, "image": _crop(image, top, left, *self.hw)}


@register("inception_crop")
class InceptionCrop:
    """Random-resized crop: area in [area_min, area_max] % of the image, aspect ratio (w/h) in
    [aspect_min, aspect_max], then resized to `size`.

    The ranges are big_vision's (``inception_crop``: area 5-100%, TensorFlow's
    ``sample_distorted_bounding_box`` aspect range 3/4-4/3); timm/torchvision's
    ``RandomResizedCrop`` takes area 8-100% (``area_min=8``). The sampling is torchvision's:
    area uniform, aspect ratio log-uniform, 10 tries, then the central crop of the largest
    fitting aspect ratio (TensorFlow falls back to the whole image after 100 tries).
    """

    random = True

    def __init__(self, size, area_min: float = 5, area_max: float = 100, method: str = "bilinear",
                 aspect_min: float = 3 / 4, aspect_max: float = 4 / 3):
        self.hw = _hw(size, "inception_crop")
        if not 0 < area_min <= area_max <= 100:
            raise ValueError(
                f"inception_crop: need 0 < area_min <= area_max <= 100 (percent), "
                f"got {area_min}, {area_max}"
            )
        if not 0 < aspect_min <= aspect_max:
            raise ValueError(f"inception_crop: need 0 < aspect_min <= aspect_max (width / "
                             f"height), got {aspect_min}, {aspect_max}")
        self.area = (area_min / 100, area_max / 100)
        self.aspect = (aspect_min, aspect_max)
        self.method = _method(method, "inception_crop")

    def __call__(self, example, rng):
        image = example["image"]
        top, left, h, w = self._window(image.shape[0], image.shape[1], rng)
        crop = _crop(image, top, left, h, w)
        return {**example, "image": resize_image(crop, self.hw, self.method)}

    def _window(self, height: int, width: int, rng: np.random.Generator):
        log_ratio = (math.log(self.aspect[0]), math.log(self.aspect[1]))
        for _ in range(10):
            area = height * width * rng.uniform(*self.area)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(area * ratio))
            h = round(math.sqrt(area / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        ratio = width / height
        if ratio < self.aspect[0]:
            w, h = width, round(width / self.aspect[0])
        elif ratio > self.aspect[1]:
            h, w = height, round(height * self.aspect[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w


@register("resize_native")
class ResizeNative:
    """NaViT's resolution sampling: the longer side drawn uniformly from [side_min, side_max]
    pixels, the aspect ratio kept, each side rounded to a multiple of `multiple` (the patch
    size, so the image cuts into whole patches; at least one patch). For packed training
    (`data.packing`): every image keeps its own shape."""

    random = True

    def __init__(self, side_min: int, side_max: int, multiple: int = 1,
                 method: str = "bilinear"):
        if not (isinstance(multiple, int) and multiple >= 1):
            raise ValueError(f"resize_native: multiple must be an int >= 1, got {multiple!r}")
        if not (isinstance(side_min, int) and isinstance(side_max, int)
                and multiple <= side_min <= side_max):
            raise ValueError(f"resize_native: need ints multiple <= side_min <= side_max, got "
                             f"{side_min}, {side_max} (multiple {multiple})")
        self.sides, self.multiple = (side_min, side_max), multiple
        self.method = _method(method, "resize_native")

    def __call__(self, example, rng):
        image = example["image"]
        return {**example, "image": resize_image(image, self.size(image.shape[:2], rng),
                                                 self.method)}

    def size(self, hw: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
        side = int(rng.integers(self.sides[0], self.sides[1] + 1))
        scale = side / max(hw)
        m = self.multiple
        return tuple(max(m, round(d * scale / m) * m) for d in hw)


@register("resize_tokens")
class ResizeTokens:
    """An image at its own aspect ratio cut into at most `max_tokens` patches of `patch` px:
    the largest grid (rows, cols) = (ceil(h·s), ceil(w·s)) of any one scale s within the budget
    (NaFlex's rule; big_vision finds s by bisection, here the grids are enumerated exactly).
    NaViT's evaluation at a sequence-length budget per image: small images are enlarged to
    the budget, large ones shrunk; a very long image is clipped to one row or column."""

    def __init__(self, max_tokens: int, patch: int, method: str = "bilinear"):
        for name, value in (("max_tokens", max_tokens), ("patch", patch)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"resize_tokens: {name} must be an int >= 1, got {value!r}")
        self.max_tokens, self.patch = max_tokens, patch
        self.method = _method(method, "resize_tokens")

    def __call__(self, example, rng=None):
        image = example["image"]
        return {**example, "image": resize_image(image, self.size(image.shape[:2]),
                                                 self.method)}

    def size(self, hw: tuple[int, int]) -> tuple[int, int]:
        h, w = hw
        best = (1, 1)
        for rows in range(1, self.max_tokens + 1):
            # the scales with ceil(h*s) == rows give ceil(w*s) in [fewest, most]
            fewest, most = w * (rows - 1) // h + 1, -(-w * rows // h)
            cols = min(most, self.max_tokens // rows)
            if cols >= fewest and rows * cols > best[0] * best[1]:
                best = (rows, cols)
        return best[0] * self.patch, best[1] * self.patch


@register("flip_lr")
class FlipLR:
    """Mirror left-right with probability `p`."""

    random = True

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"flip_lr: p must be in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, example, rng):
        if rng.uniform() < self.p:
            return {**example, "image": example["image"][:, ::-1]}
        return example


def _scaled_float(image: np.ndarray, scale, offset) -> np.ndarray:
    """``image · scale + offset`` as a new float32 array, computed in place in it (no
    temporaries): the affine map of ``value_range`` and ``normalize``."""
    out = image.astype(np.float32)
    out *= scale
    out += offset
    return out


@register("normalize")
class Normalize:
    """Per-channel standardisation of a [0, 255] image: (x / 255 − mean) / std, float32, with
    ImageNet's mean and std by default (timm's and torchvision's ``Normalize``; DeiT's input).
    ``value_range(-1, 1)`` is big_vision's choice instead."""

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        mean, std = np.atleast_1d(np.float32(mean)), np.atleast_1d(np.float32(std))
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all():
            raise ValueError(f"normalize: mean and std need one value per channel (or one for "
                             f"all), std > 0; got mean={mean.tolist()}, std={std.tolist()}")
        self.scale = np.float32(1 / 255) / std
        self.offset = -mean / std

    def __call__(self, example, rng):
        image = example["image"]
        if image.shape[-1] != len(self.scale) and len(self.scale) != 1:
            raise ValueError(f"normalize: {len(self.scale)} channel statistics for an image of "
                             f"{image.shape[-1]} channels (to_rgb first?)")
        return {**example, "image": _scaled_float(image, self.scale, self.offset)}


@register("value_range")
class ValueRange:
    """Linearly maps [in_min, in_max] (uint8 pixel range by default) to float32 [vmin, vmax]."""

    def __init__(
        self,
        vmin: float = -1,
        vmax: float = 1,
        in_min: float = 0,
        in_max: float = 255,
        clip_values: bool = False,
    ):
        if not (vmin < vmax and in_min < in_max):
            raise ValueError(
                f"value_range: need vmin < vmax and in_min < in_max, got "
                f"({vmin}, {vmax}, in_min={in_min}, in_max={in_max})"
            )
        self.scale = np.float32((vmax - vmin) / (in_max - in_min))
        self.offset = np.float32(vmin - in_min * (vmax - vmin) / (in_max - in_min))
        self.bounds = (np.float32(vmin), np.float32(vmax)) if clip_values else None

    def __call__(self, example, rng):
        image = _scaled_float(example["image"], self.scale, self.offset)
        if self.bounds is not None:
            image = np.clip(image, *self.bounds)
        return {**example, "image": image}
