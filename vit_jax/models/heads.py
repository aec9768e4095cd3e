"""Pooling of the encoded tokens into one vector per image: class token, mean, or MAP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.models.attention import Attention
from vit_jax.models.encoder import Mlp
from vit_jax.models.layers import LayerNorm

Array = jax.Array
POOLS = ("cls", "gap", "map", "none")


class MAPHead(nnx.Module):
    """Multi-head attention pooling: a learned probe attends over the tokens (big_vision)."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int, *, rngs: nnx.Rngs,
                 gelu_approximate: bool = False):
        init = nnx.initializers.xavier_uniform()
        self.probe = nnx.Param(init(rngs.params(), (1, 1, width), jnp.float32),
                               logical_axes=(None, None, "embed"))
        self.attn = Attention(width, num_heads, rngs=rngs)
        self.norm = LayerNorm(width, rngs=rngs)
        self.mlp = Mlp(width, mlp_dim, rngs=rngs, gelu_approximate=gelu_approximate)

    def __call__(self, x: Array) -> Array:
        probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        y, _ = self.attn(probe, context=x)
        y = y + self.mlp(self.norm(y))
        return y[:, 0]


def pool_tokens(x: Array, pool: str, num_prefix: int, map_head: MAPHead | None) -> Array:
    """(B, L, D) tokens -> (B, D), or unchanged for ``pool='none'``."""
    if pool == "cls":
        return x[:, 0]
    if pool == "gap":
        return x[:, num_prefix:].mean(axis=1)  # the prefix tokens are not image content
    if pool == "map":
        return map_head(x)
    return x


def pool_segments(x: Array, segment_ids: Array, max_images: int) -> Array:
    """(B, L, D) packed tokens -> (B, K, D): the mean of each image's tokens (``gap`` per
    segment; segment k + 1 is slot k, 0 is padding; an empty slot gives zeros)."""
    member = jax.nn.one_hot(segment_ids - 1, max_images, dtype=x.dtype)  # (B, L, K)
    sums = jnp.einsum("blk,bld->bkd", member, x)
    return sums / jnp.maximum(member.sum(axis=1), 1)[..., None]
