"""Position embeddings: learned, fixed 2D sine-cosine, factorised learned, or none.

``factorized`` (NaViT's choice): one learned table per axis, rows (G_h, D) and columns
(G_w, D), a patch at (row, column) getting the sum of its row's and its column's embedding;
an image's grid must fit the tables. ``factorized_fractional``: each coordinate is first taken
as a fraction of its image's side and scaled to the table, index = floor(i·G / g), so every
grid of any size and aspect ratio spans the whole tables (NaViT's fractional coordinates).
Neither has rows for class/register tokens (big_vision's layout, below).

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
KINDS = ("learn", "sincos2d", "none", "factorized", "factorized_fractional")
FACTORIZED = ("factorized", "factorized_fractional")


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
    y, x = np.mgrid[:grid_h, :grid_w]
    columns, rows = sincos_axis(grid_w, width, temperature), sincos_axis(grid_h, width, temperature)
    return np.concatenate([columns[x.reshape(-1)], rows[y.reshape(-1)]], axis=1)


def sincos_axis(n: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """One axis's half of ``sincos2d``: (n, width/2) = [sin(i·omega), cos(i·omega)] for
    i < n. The 2D table is [columns' half at x, rows' half at y], so a token at any (row,
    column) gets its row of the table by gathering (``PositionEmbedding.at``)."""
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / (quarter - 1))
    angles = np.arange(n, dtype=np.float64)[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


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
        includes_prefix = includes_prefix and kind not in FACTORIZED  # no prefix rows there
        self.num_prefix = num_prefix if includes_prefix else 0
        self.includes_prefix = includes_prefix
        if kind in FACTORIZED:
            init = nnx.initializers.normal(stddev=0.02)
            self.pos_embedding_row = nnx.Param(init(rngs.params(), (grid[0], width),
                                                    jnp.float32),
                                               logical_axes=("tokens", "embed"))
            self.pos_embedding_col = nnx.Param(init(rngs.params(), (grid[1], width),
                                                    jnp.float32),
                                               logical_axes=("tokens", "embed"))
        if kind == "sincos2d":
            sincos2d(*grid, width)  # validate the width now, not at the first call
        if kind == "learn":
            length = self.num_prefix + grid[0] * grid[1]
            init = nnx.initializers.normal(stddev=0.02)
            self.pos_embedding = nnx.Param(init(rngs.params(), (1, length, width), jnp.float32),
                                           logical_axes=(None, "tokens", "embed"))

    @property
    def max_grid(self) -> tuple[int, int] | None:
        """The largest (rows, columns) grid ``at`` covers: a learned table's (or factorised
        tables' lengths); None where any grid works (sincos2d, fractional, none)."""
        if self.kind == "learn":
            return self.grid
        if self.kind == "factorized":
            return self.pos_embedding_row.shape[0], self.pos_embedding_col.shape[0]
        return None

    def __call__(self, grid: tuple[int, int]) -> Array | None:
        if self.kind == "none":
            return None
        if self.kind in FACTORIZED:
            bound = self.max_grid
            if bound is not None and (grid[0] > bound[0] or grid[1] > bound[1]):
                raise ValueError(f"a {grid[0]}x{grid[1]} patch grid is beyond the factorized "
                                 f"position tables ({bound[0]}x{bound[1]}); use "
                                 "posemb='factorized_fractional' or a larger model.image_size")
            rows, cols = np.mgrid[:grid[0], :grid[1]]
            sides = np.broadcast_to(np.asarray(grid), (*rows.shape, 2))
            positions = jnp.asarray(np.stack([rows, cols], -1).reshape(-1, 2))
            return self.at(positions, max_side=max(grid), grids=sides.reshape(-1, 2))[None]
        if self.kind == "sincos2d":
            table = jnp.asarray(sincos2d(*grid, self.width))[None]
            if self.num_prefix:
                table = jnp.pad(table, ((0, 0), (self.num_prefix, 0), (0, 0)))
            return table
        if tuple(grid) == self.grid:
            return self.pos_embedding[...]
        return resample_posemb(self.pos_embedding[...], tuple(grid), old_grid=self.grid,
                               num_prefix_tokens=self.num_prefix, method=self.resample_method)

    def at(self, positions: Array, max_side: int, grids: Array | None = None) -> Array | None:
        """The embedding of each token at (row, column) ``positions`` (..., 2), for packed
        sequences (``vit_jax.packing``): the row the per-image table of any grid holds for that
        patch. ``sincos2d`` is exact for every grid; a learned table covers the model's grid
        only (``pack_images(max_grid=...)`` checks that on the host). ``max_side``: a bound on
        any row or column (the sequence length). ``grids`` (..., 2): each token's image grid
        (rows, columns), which fractional coordinates need."""
        if self.kind == "none":
            return None
        rows, cols = positions[..., 0], positions[..., 1]
        if self.kind in FACTORIZED:
            row_table, col_table = self.pos_embedding_row[...], self.pos_embedding_col[...]
            if self.kind == "factorized_fractional":
                if grids is None:
                    raise ValueError("fractional positions need each token's image grid "
                                     "('grids', as pack_images gives)")
                grids = jnp.maximum(jnp.asarray(grids), 1)  # padding tokens: any valid row
                rows = rows * row_table.shape[0] // grids[..., 0]
                cols = cols * col_table.shape[0] // grids[..., 1]
            return row_table[rows] + col_table[cols]
        if self.kind == "sincos2d":
            axis = jnp.asarray(sincos_axis(max_side, self.width))
            return jnp.concatenate([axis[cols], axis[rows]], axis=-1)
        table = self.pos_embedding[...][0, self.num_prefix:]
        return table[rows * self.grid[1] + cols]
