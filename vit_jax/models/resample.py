"""Resampling learned position embeddings to a new patch grid (new resolution or patch size)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
METHODS = ("bilinear", "bicubic")
_JAX_METHOD = {"bilinear": "linear", "bicubic": "cubic"}


def resample_posemb(posemb: Array, new_grid: tuple[int, int], *,
                    old_grid: tuple[int, int] | None = None, num_prefix_tokens: int = 0,
                    method: str = "bilinear") -> Array:
    """(1, prefix + gh*gw, D) -> (1, prefix + nh*nw, D); prefix rows are kept unchanged."""
    if method not in METHODS:
        raise ValueError(f"unknown resample method {method!r}; valid: {METHODS}")
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
    resized = jax.image.resize(image, (1, *new_grid, width), _JAX_METHOD[method], antialias=False)
    resized = resized.reshape(1, -1, width).astype(posemb.dtype)
    return jnp.concatenate([prefix, resized], axis=1)
