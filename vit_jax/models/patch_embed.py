"""Patch embedding: the image tokenizer of a ViT.

A convolution with kernel = stride = patch and no padding is the same linear map as cutting the
image into patches ("unfold"), flattening each patch in (row, col, channel) order and applying
one shared matrix. Both spellings live here and the tests check they agree.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.models.contract import linear
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


def unpatchify(patches: Array, grid: tuple[int, int], patch_size: tuple[int, int]) -> Array:
    """Inverse of ``patchify``: (B, gh*gw, ph*pw*C) -> (B, gh*ph, gw*pw, C)."""
    b, _, p = patches.shape
    (gh, gw), (ph, pw) = grid, patch_size
    c = p // (ph * pw)
    x = patches.reshape(b, gh, gw, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * ph, gw * pw, c)


def _conv(images: Array, kernel: Array) -> Array:
    x = jax.lax.conv_general_dilated(images, kernel, window_strides=kernel.shape[:2],
                                     padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return x.reshape(x.shape[0], -1, x.shape[-1])


@jax.custom_vjp
def conv_embed(images: Array, kernel: Array) -> Array:
    """(B, H, W, C) images -> (B, gh*gw, D) tokens: the convolution forward, matmuls backward.

    XLA:CPU differentiates the convolution into a dilated convolution plus two transposes of
    the image; the same gradients as matmuls (kernel: patchesᵀ @ dY; images: dY @ kernelᵀ,
    unpatchified, and dropped by XLA when unused) run faster there (README, "Performance").
    The forward stays a convolution,
    which XLA:CPU runs as fast as patchify + matmul. CPU only: elsewhere ``PatchEmbed`` lets
    the backend differentiate its own convolution.
    """
    return _conv(images, kernel)


def _conv_embed_forward(images: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    return _conv(images, kernel), (images, kernel)


def _conv_embed_backward(residuals: tuple[Array, Array], d_tokens: Array) -> tuple[Array, Array]:
    images, kernel = residuals
    patch = kernel.shape[:2]
    matrix = kernel.reshape(-1, kernel.shape[-1])  # (ph*pw*C, D), patchify's order
    patches = patchify(images, patch)
    # float32 results keep both products on XLA:CPU's fast bf16 path (see models/contract.py)
    d_kernel = jnp.einsum("bnp,bnd->pd", patches, d_tokens,
                          preferred_element_type=jnp.float32).reshape(kernel.shape)
    d_patches = jnp.einsum("bnd,pd->bnp", d_tokens, matrix, preferred_element_type=jnp.float32)
    d_images = unpatchify(d_patches, grid_size(images.shape[1:3], patch), patch)
    return d_images.astype(images.dtype), d_kernel.astype(kernel.dtype)


conv_embed.defvjp(_conv_embed_forward, _conv_embed_backward)


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

    def __call__(self, images: Array, patch_size: tuple[int, int] | None = None) -> Array:
        """``patch_size``: cut patches of another size, with the kernel PI-resized to it inside
        the computation (FlexiViT training: gradients reach the underlying kernel)."""
        patch = self.patch_size if patch_size is None else tuple(patch_size)
        grid_size(images.shape[1:3], patch)  # clear error before XLA's
        kernel = self.kernel[...]
        if patch != self.patch_size:
            from vit_jax.models.flexi import resize_patch_kernel  # flexi builds on this module

            kernel = resize_patch_kernel(kernel, patch)
        kernel = kernel.astype(images.dtype)
        if self.method == "patchify":
            return self._project(patchify(images, patch), kernel)
        conv = conv_embed if jax.default_backend() == "cpu" else _conv
        x = conv(images, kernel)
        return x + self.bias[...].astype(x.dtype)

    def embed_patches(self, patches: Array) -> Array:
        """(..., ph·pw·C) patches already cut (``patchify``'s order, as ``vit_jax.packing``
        makes them) -> (..., D): the same linear map as ``__call__``."""
        kernel = self.kernel[...].astype(patches.dtype)
        if patches.shape[-1] != math.prod(kernel.shape[:3]):
            raise ValueError(f"patches of {patches.shape[-1]} values do not match the "
                             f"{kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]} patch "
                             "embedding; pack with the model's patch size and channels")
        return self._project(patches, kernel)

    def _project(self, patches: Array, kernel: Array) -> Array:
        return linear(patches, kernel.reshape(-1, kernel.shape[-1]), self.bias[...])
