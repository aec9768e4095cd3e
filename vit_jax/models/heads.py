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

    def __call__(self, x: Array, segment_ids: Array | None = None,
                 max_images: int = 1) -> Array:
        """(B, N, D) tokens -> (B, D); packed (``segment_ids`` (B, N)): one probe per image
        slot attending only to that image's tokens -> (B, max_images, D)."""
        slots = 1 if segment_ids is None else max_images
        probe = jnp.broadcast_to(self.probe[...].astype(x.dtype),
                                 (x.shape[0], slots, x.shape[-1]))
        pair = None
        if segment_ids is not None:
            slot_ids = jnp.broadcast_to(jnp.arange(1, slots + 1), (x.shape[0], slots))
            pair = (slot_ids, segment_ids)
        y, _ = self.attn(probe, context=x, segment_ids=pair)
        y = y + self.mlp(self.norm(y))
        return y[:, 0] if segment_ids is None else y


def pool_tokens(x: Array, pool: str, num_prefix: int, map_head: MAPHead | None) -> Array:
    """(B, L, D) tokens -> (B, D), or unchanged for ``pool='none'``."""
    if pool == "cls":
        return x[:, 0]
    if pool == "gap":
        return x[:, num_prefix:].mean(axis=1)  # the prefix tokens are not image content
    if pool == "map":
        return map_head(x)
    return x


def pool_segments(x: Array, segment_ids: Array, max_images: int, pool: str,
                  map_head: MAPHead | None) -> Array:
    """(B, L, D) packed tokens -> (B, K, D) per image slot (segment k + 1 is slot k, 0 is
    padding): ``gap`` the mean of each image's tokens (zeros for an empty slot), ``map`` one
    probe per slot attending within its image."""
    if pool == "map":
        return map_head(x, segment_ids, max_images)
    member = jax.nn.one_hot(segment_ids - 1, max_images, dtype=x.dtype)  # (B, L, K)
    sums = jnp.einsum("blk,bld->bkd", member, x)
    return sums / jnp.maximum(member.sum(axis=1), 1)[..., None]
