"""Multi-head attention with separate q/k/v projections and selectable kernels.

Projections keep an explicit heads axis, (D, heads, head_dim), so tensor parallelism can shard
heads and checkpoints of both Google families map onto it without reshuffling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.models.layers import LayerNorm, dropout, param

Array = jax.Array
IMPLEMENTATIONS = ("standard", "xla")


def standard_attention(q: Array, k: Array, v: Array) -> tuple[Array, Array]:
    """Softmax attention on (B, N, H, hd) inputs; returns output and (B, H, Nq, Nk) weights."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v), weights


def attend(q: Array, k: Array, v: Array, implementation: str) -> Array:
    """Attention output only, through the kernel named by ``implementation``."""
    if implementation == "xla":
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")
    return standard_attention(q, k, v)[0]


class Attention(nnx.Module):
    """Multi-head (self- or cross-) attention."""

    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs, qk_norm: bool = False,
                 implementation: str = "standard", attn_dropout: float = 0.0):
        if width % num_heads:
            raise ValueError(
                f"width {width} is not divisible by num_heads {num_heads}; "
                f"valid head counts for this width: "
                f"{[h for h in range(1, min(width, 64) + 1) if width % h == 0]}"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"unknown attention implementation {implementation!r}; valid: {IMPLEMENTATIONS}"
            )
        head_dim = width // num_heads
        init = nnx.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
        zeros = nnx.initializers.zeros_init()
        in_axes = ("embed", "heads", "head_dim")
        for name in ("query", "key", "value"):
            kernel = param(rngs, init, (width, num_heads, head_dim), in_axes)
            bias = param(rngs, zeros, (num_heads, head_dim), in_axes[1:])
            setattr(self, name, nnx.Dict(kernel=kernel, bias=bias))
        out_init = nnx.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)
        self.out = nnx.Dict(
            kernel=param(rngs, out_init, (num_heads, head_dim, width),
                         ("heads", "head_dim", "embed")),
            bias=param(rngs, zeros, (width,), ("embed",)),
        )
        self.q_norm = LayerNorm(head_dim, rngs=rngs, axis_name="head_dim") if qk_norm else None
        self.k_norm = LayerNorm(head_dim, rngs=rngs, axis_name="head_dim") if qk_norm else None
        self.implementation = implementation
        self.attn_dropout = attn_dropout

    def _project(self, x: Array, proj) -> Array:
        return (jnp.einsum("bnd,dhk->bnhk", x, proj["kernel"][...].astype(x.dtype))
                + proj["bias"][...].astype(x.dtype))

    def __call__(self, x: Array, context: Array | None = None, *, key: Array | None = None,
                 return_weights: bool = False) -> tuple[Array, Array | None]:
        context = x if context is None else context
        q = self._project(x, self.query)
        k = self._project(context, self.key)
        v = self._project(context, self.value)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        weights = None
        if return_weights or (key is not None and self.attn_dropout > 0):
            y, weights = standard_attention(q, k, v)
            if key is not None and self.attn_dropout > 0:
                weights_dropped = dropout(weights, self.attn_dropout, key)
                y = jnp.einsum("bhqk,bkhd->bqhd", weights_dropped, v)
        else:
            y = attend(q, k, v, self.implementation)
        out = jnp.einsum("bnhk,hkd->bnd", y, self.out["kernel"][...].astype(y.dtype))
        return out + self.out["bias"][...].astype(out.dtype), weights
