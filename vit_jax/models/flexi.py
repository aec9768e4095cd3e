"""FlexiViT: run a ViT trained with one patch size at another (Beyer et al. 2023, "FlexiViT").

Resizing the patch-embedding kernel like an image breaks the tokens: a patch upsampled 2x has 4x
the pixels, so plain interpolation changes every token's scale and content. The paper's
pseudo-inverse (PI) resize instead asks that a resized patch give the same token as the original:
with B the matrix of ``x -> resize(x)`` on one flattened single-channel patch,

    <B x, w'> = <x, w>  for all x   <=>   B^T w' = w   =>   w' = pinv(B^T) w.

When growing the patch, B^T has full row rank and the equation holds exactly. When shrinking,
it is solved in the least-squares sense: B^T w' is the orthogonal projection of w onto the range
of B^T, so tokens match exactly for patches in that range (e.g. patches that are constant on the
blocks a 2x bilinear shrink averages) and as well as any kernel can on average otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vit_jax.models.patch_embed import grid_size
from vit_jax.models.resample import check_method, resample_posemb, resize_grid
from vit_jax.sizes import as_pair

Array = jax.Array
# FlexiViT builds B with tf.image.resize(method="bilinear"): half-pixel centres, no antialias,
# i.e. our torch-equivalent 'bilinear'. Images are resized the same way before patching.
PATCH_RESIZE_METHOD = "bilinear"


def resize_matrix(old_hw: Sequence[int], new_hw: Sequence[int],
                  method: str = PATCH_RESIZE_METHOD) -> np.ndarray:
    """B of shape (nh*nw, ph*pw): ``resize(x).ravel() == B @ x.ravel()`` for one-channel x."""
    check_method(method)
    (ph, pw), (nh, nw) = tuple(old_hw), tuple(new_hw)
    basis = jnp.eye(ph * pw, dtype=jnp.float32).reshape(ph * pw, ph, pw, 1)
    columns = np.asarray(resize_grid(basis, (nh, nw), method), np.float64)
    return columns.reshape(ph * pw, nh * nw).T


def resize_patch_kernel(kernel: Array, new_patch: int | Sequence[int],
                        method: str = PATCH_RESIZE_METHOD) -> Array:
    """PI-resize of a (ph, pw, C, D) patch-embedding kernel to (nh, nw, C, D)."""
    if kernel.ndim != 4:
        raise ValueError(f"expected a (ph, pw, channels, width) kernel, got shape {kernel.shape}")
    ph, pw, c, d = kernel.shape
    nh, nw = as_pair(new_patch, "new_patch")
    if (nh, nw) == (ph, pw):
        return kernel
    pinv = _pinv_resize(ph, pw, nh, nw, method)  # (nh*nw, ph*pw), a constant
    # jnp, so a FlexiViT train step can resize (and differentiate through) its kernel
    w = jnp.asarray(kernel, jnp.float32).reshape(ph * pw, c * d)
    out = jnp.matmul(jnp.asarray(pinv, jnp.float32), w, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(nh, nw, c, d).astype(kernel.dtype)


@functools.lru_cache(maxsize=64)
def _pinv_resize(ph: int, pw: int, nh: int, nw: int, method: str) -> np.ndarray:
    """pinv(B^T) for one pair of patch sizes: computed once, then reused by every step (eagerly,
    even when first asked for inside a traced train step)."""
    with jax.ensure_compile_time_eval():
        return np.linalg.pinv(resize_matrix((ph, pw), (nh, nw), method).T)


def change_patch_size(model: nnx.Module, new_patch: int | Sequence[int], *,
                      image_size: int | Sequence[int] | None = None,
                      method: str = PATCH_RESIZE_METHOD,
                      posemb_method: str | None = None) -> nnx.Module:
    """A copy of a ``VisionTransformer`` that runs with ``new_patch`` (the input is untouched).

    The patch kernel is PI-resized and a learned position table is resampled to the new grid,
    ``image_size // new_patch`` (``image_size`` defaults to the model's; pass a scaled one, e.g.
    2x for 2x patches, to keep the token grid and so the position table unchanged).
    ``posemb_method`` defaults to the model's own ``posemb_resample``. Parameters are shared
    with the input model until either is updated.
    """
    new_patch = as_pair(new_patch, "new_patch")
    image_size = as_pair(image_size if image_size is not None else model.image_size, "image_size")
    new_grid = grid_size(image_size, new_patch)
    out = nnx.clone(model)
    kernel = out.patch_embed.kernel
    kernel.set_value(resize_patch_kernel(kernel[...], new_patch, method))
    out.patch_embed.patch_size = new_patch
    out.patch_size, out.image_size, out.grid = new_patch, image_size, new_grid
    pe = out.posemb
    if pe.kind == "learn" and tuple(pe.grid) != new_grid:
        table = resample_posemb(pe.pos_embedding[...], new_grid, old_grid=pe.grid,
                                num_prefix_tokens=pe.num_prefix,
                                method=posemb_method or pe.resample_method)
        pe.pos_embedding.set_value(table)
    if pe.kind == "factorized" and tuple(pe.grid) != new_grid:  # fractional: any grid fits
        for table, length in ((pe.pos_embedding_row, new_grid[0]),
                              (pe.pos_embedding_col, new_grid[1])):
            values = table[...]
            table.set_value(jax.image.resize(values, (length, values.shape[1]), "linear",
                                             antialias=False))
    pe.grid = new_grid
    return out


FLEXI_STREAM = 0xF1E  # keeps the patch-size draws apart from any other use of (seed, step)


def patch_size_at(step: int, sizes: Sequence[int], weights: Sequence[float] = (), *,
                  seed: int = 0) -> int:
    """The patch size FlexiViT training uses at ``step``: drawn from (seed, step) alone, so a
    resumed run draws exactly what an uninterrupted one would; ``weights`` empty = uniform."""
    if not sizes:
        raise ValueError("patch_size_at needs at least one patch size")
    p = np.asarray(weights if weights else [1.0] * len(sizes), np.float64)
    rng = np.random.default_rng([seed, step, FLEXI_STREAM])
    return int(sizes[rng.choice(len(sizes), p=p / p.sum())])
