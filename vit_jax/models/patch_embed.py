"""Patch embedding: the image tokenizer of a ViT.

A convolution with kernel = stride = patch and no padding is the same linear map as cutting the
image into patches ("unfold"), flattening each patch in (row, col, channel) order and applying
one shared matrix. Both spellings live here and the tests check they agree (seed 001).
"""

from __future__ import annotations

import jax
from flax import nnx

from vit_jax.models.layers import param

Array = jax.Array
METHODS = ("conv", "patchify")


def grid_size(image_size: tuple[int, int], patch_size: tuple[int, int]) -> tuple[int, int]:
    """Number of patches along (height, width); the image must be an exact multiple."""
    (h, w), (ph, pw) = image_size, patch_size
    if h % ph or w % pw:
        raise ValueError(
            f"image size {h}x{w} is not divisible by patch size {ph}x{pw}; "
            f"use an image size that is a multiple of the patch (e.g. {h - h % ph or ph}x"
            f"{w - w % pw or pw})"
        )
    return h // ph, w // pw


def patchify(images: Array, patch_size: tuple[int, int]) -> Array:
    """(B, H, W, C) -> (B, gh*gw, ph*pw*C), patches in row-major grid order."""
    b, h, w, c = images.shape
    ph, pw = patch_size
    gh, gw = grid_size((h, w), patch_size)
    x = images.reshape(b, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * gw, ph * pw * c)


class PatchEmbed(nnx.Module):
    """Maps (B, H, W, C) images to (B, gh*gw, D) tokens with one shared projection."""

    def __init__(self, patch_size: tuple[int, int], in_channels: int, width: int, *,
                 rngs: nnx.Rngs, method: str = "conv"):
        if method not in METHODS:
            raise ValueError(f"unknown patch_embed method {method!r}; valid: {METHODS}")
        self.patch_size = tuple(patch_size)
        self.method = method
        ph, pw = self.patch_size
        self.kernel = param(rngs, nnx.initializers.lecun_normal(), (ph, pw, in_channels, width),
                            ("patch", "patch", "channels", "embed"))
        self.bias = param(rngs, nnx.initializers.zeros_init(), (width,), ("embed",))

    def __call__(self, images: Array) -> Array:
        grid_size(images.shape[1:3], self.patch_size)  # clear error before XLA's
        kernel = self.kernel[...].astype(images.dtype)
        if self.method == "patchify":
            x = patchify(images, self.patch_size) @ kernel.reshape(-1, kernel.shape[-1])
        else:
            x = jax.lax.conv_general_dilated(
                images, kernel, window_strides=self.patch_size, padding="VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = x.reshape(x.shape[0], -1, x.shape[-1])
        return x + self.bias[...].astype(x.dtype)
