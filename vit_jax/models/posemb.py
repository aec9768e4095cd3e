"""Position embeddings: learned, fixed 2D sine-cosine, or none.

Two layouts exist in the checkpoints people use: the original ViT and timm add one table that
covers the prefix (class) tokens *and* the patches; big_vision adds a table over the patches only,
before the prefix tokens are prepended. ``includes_prefix`` selects the layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vit_jax.models.resample import DEFAULT_METHOD, check_method, resample_posemb

Array = jax.Array
KINDS = ("learn", "sincos2d", "none")


def sincos2d(grid_h: int, grid_w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2D sine-cosine table of shape (grid_h*grid_w, width), MoCo-v3 / big_vision formula.

    With D = width: omega_k = 1 / temperature**(k / (D/4 - 1)) for k < D/4, and each patch at
    column x, row y gets [sin(x*omega), cos(x*omega), sin(y*omega), cos(y*omega)].
    """
    if width % 4 or width < 8:
        raise ValueError(
            f"sincos2d position embedding needs a width that is a multiple of 4 and >= 8, "
            f"got {width}; use posemb='learn' or a width like {max(8, width + (-width) % 4)}"
        )
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / (quarter - 1))
    y, x = np.mgrid[:grid_h, :grid_w]
    x = x.reshape(-1, 1) * omega[None]
    y = y.reshape(-1, 1) * omega[None]
    table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    return table.astype(np.float32)


class PositionEmbedding(nnx.Module):
    """Holds (or computes) the table added to the tokens.

    ``__call__(grid)`` returns (1, L, D) with L = grid_h*grid_w, plus ``num_prefix`` rows first
    when ``includes_prefix``. A learned table is only valid on the grid it was built for; other
    grids go through ``vit_jax.models.resample`` with ``resample_method`` (dynamic resolution).
    """

    def __init__(self, kind: str, grid: tuple[int, int], width: int, *, num_prefix: int,
                 includes_prefix: bool, rngs: nnx.Rngs, resample_method: str = DEFAULT_METHOD):
        if kind not in KINDS:
            raise ValueError(f"unknown posemb {kind!r}; valid: {KINDS}")
        self.resample_method = check_method(resample_method)
        self.kind = kind
        self.grid = tuple(grid)
        self.width = width
        self.num_prefix = num_prefix if includes_prefix else 0
        self.includes_prefix = includes_prefix
        if kind == "sincos2d":
            sincos2d(*grid, width)  # validate the width now, not at the first call
        if kind == "learn":
            length = self.num_prefix + grid[0] * grid[1]
            init = nnx.initializers.normal(stddev=0.02)
            self.pos_embedding = nnx.Param(init(rngs.params(), (1, length, width), jnp.float32),
                                           logical_axes=(None, "tokens", "embed"))

    def __call__(self, grid: tuple[int, int]) -> Array | None:
        if self.kind == "none":
            return None
        if self.kind == "sincos2d":
            table = jnp.asarray(sincos2d(*grid, self.width))[None]
            if self.num_prefix:
                table = jnp.pad(table, ((0, 0), (self.num_prefix, 0), (0, 0)))
            return table
        if tuple(grid) == self.grid:
            return self.pos_embedding[...]
        return resample_posemb(self.pos_embedding[...], tuple(grid), old_grid=self.grid,
                               num_prefix_tokens=self.num_prefix, method=self.resample_method)
