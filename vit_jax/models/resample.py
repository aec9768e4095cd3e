"""Resampling learned position embeddings to a new patch grid (new resolution or patch size).

Every method is named after the peer whose numbers it reproduces (tests check them to ~1e-6):

    bilinear            torch ``F.interpolate(mode='bilinear', align_corners=False)``
    bilinear_antialias  the same with ``antialias=True`` (a triangle low-pass when shrinking)
    bicubic             torch ``mode='bicubic'``: Keys kernel a=-0.75, edge pixels repeated
    bicubic_antialias   torch ``mode='bicubic', antialias=True``, timm's ``resample_abs_pos_embed``
                        default: Keys a=-0.5, weights renormalised at the edges (also when growing)
    zoom                ``scipy.ndimage.zoom(grid, zoom, order=1)``, corner-aligned linear, as the
                        original vit_jax and big_vision resize position embeddings

Only the patch rows are resampled; class/register rows are kept. Fixed ``sincos2d`` tables are
recomputed for the new grid instead (``vit_jax.models.posemb``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
METHODS = ("bilinear", "bilinear_antialias", "bicubic", "bicubic_antialias", "zoom")
# timm's choice for its own weights and dynamic image size. Antialiasing makes shrinking the grid
# (bigger patches, smaller images) a proper low-pass instead of skipping rows, and a=-0.5 rings
# less than torch's plain bicubic (a=-0.75). For checkpoints trained with another peer's resize,
# pass that peer's method (big_vision/original ViT: 'zoom'; FlexiViT: 'bilinear_antialias').
DEFAULT_METHOD = "bicubic_antialias"

# (jax.image method, antialias) reproducing each torch mode; see GUIDE "Numerical parity facts".
_JAX_RESIZE = {
    "bilinear": ("linear", False),
    "bilinear_antialias": ("linear", True),
    "bicubic": ("cubic-pytorch", False),
    "bicubic_antialias": ("cubic", True),
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown resample method {method!r}; valid: {METHODS}")
    return method


def zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of scipy's ``zoom(order=1)`` along one axis (corner-aligned)."""
    src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(mat, (np.arange(n_out), hi), frac)
    return mat


def resize_grid(x: Array, new_hw: Sequence[int], method: str = DEFAULT_METHOD) -> Array:
    """Resizes the two axes before the last: (..., h, w, d) -> (..., nh, nw, d)."""
    check_method(method)
    *lead, h, w, d = x.shape
    nh, nw = new_hw
    if (h, w) == (nh, nw):
        return x
    if method == "zoom":
        mh = jnp.asarray(zoom_matrix(h, nh), x.dtype)
        mw = jnp.asarray(zoom_matrix(w, nw), x.dtype)
        return jnp.einsum("Hh,Ww,...hwd->...HWd", mh, mw, x,
                          precision=jax.lax.Precision.HIGHEST)
    jax_method, antialias = _JAX_RESIZE[method]
    return jax.image.resize(x, (*lead, nh, nw, d), jax_method, antialias=antialias)


def resample_posemb(posemb: Array, new_grid: tuple[int, int], *,
                    old_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 0,
                    method: str = DEFAULT_METHOD) -> Array:
    """(1, prefix + gh*gw, D) -> (1, prefix + nh*nw, D); prefix rows are kept unchanged.

    ``old_grid`` defaults to the square grid the table's length implies. Computes in float32
    and returns the input dtype; an unchanged grid returns ``posemb`` itself.
    """
    check_method(method)
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    n = grid.shape[1]
    if old_grid is None:
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"cannot infer a square grid from {n} patch positions; pass old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid {old_grid} does not match {n} patch positions")
    if tuple(new_grid) == tuple(old_grid):
        return posemb
    width = grid.shape[-1]
    image = grid.reshape(1, *old_grid, width).astype(jnp.float32)
    resized = resize_grid(image, tuple(new_grid), method)
    resized = resized.reshape(1, -1, width).astype(posemb.dtype)
    return jnp.concatenate([prefix, resized], axis=1)
