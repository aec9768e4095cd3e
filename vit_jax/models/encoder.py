"""The Transformer encoder: pre-LayerNorm blocks run as a Python loop or as a scan over layers.

Scan stacks every block parameter on a leading ``layers`` axis so compile time does not grow with
depth; the loop keeps one module per layer (easier to inspect, faster on CPU). ``stack_blocks`` /
``unstack_blocks`` convert between the two, and both forms are initialised from the same per-layer
draws, so ``scan=True`` and ``scan=False`` with one seed hold identical weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.models.attention import KEY_CHUNK, QUERY_CHUNK, Attention
from vit_jax.models.layers import Dense, LayerNorm, drop_path, dropout, gelu

Array = jax.Array

# Remat policies by name: what the backward pass may keep instead of recomputing.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Mlp(nnx.Module):
    def __init__(self, width: int, mlp_dim: int, *, rngs: nnx.Rngs, dropout_rate: float = 0.0,
                 gelu_approximate: bool = False):
        bias_init = nnx.initializers.normal(stddev=1e-6)
        self.fc1 = Dense(width, mlp_dim, rngs=rngs, axes=("embed", "mlp"), bias_init=bias_init)
        self.fc2 = Dense(mlp_dim, width, rngs=rngs, axes=("mlp", "embed"), bias_init=bias_init)
        self.dropout_rate = dropout_rate
        self.gelu_approximate = gelu_approximate

    def __call__(self, x: Array, key: Array | None = None, *,
                 input_norm: LayerNorm | None = None) -> Array:
        # Exact (erf) GELU as timm and PyTorch; Google's Flax ViTs used the tanh form
        # (`gelu_approximate=True`, set when importing their checkpoints): ~1e-3 apart in logits.
        h = gelu(self.fc1(x, input_norm), approximate=self.gelu_approximate)
        return self.fc2(dropout(h, self.dropout_rate, key))


class LayerScale(nnx.Module):
    def __init__(self, width: int, init_value: float):
        self.gamma = nnx.Param(jnp.full((width,), init_value, jnp.float32), logical_axes=("embed",))

    def __call__(self, x: Array) -> Array:
        return x * self.gamma[...].astype(x.dtype)


class Block(nnx.Module):
    """x + DropPath(LS(Attn(LN(x)))), then x + DropPath(LS(MLP(LN(x))))."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int, *, rngs: nnx.Rngs,
                 dropout: float = 0.0, attn_dropout: float = 0.0, layerscale: float | None = None,
                 qk_norm: bool = False, attention: str = "standard",
                 query_chunk: int = QUERY_CHUNK, key_chunk: int = KEY_CHUNK,
                 gelu_approximate: bool = False):
        self.norm1 = LayerNorm(width, rngs=rngs)
        self.attn = Attention(width, num_heads, rngs=rngs, qk_norm=qk_norm,
                              implementation=attention, attn_dropout=attn_dropout,
                              query_chunk=query_chunk, key_chunk=key_chunk)
        self.norm2 = LayerNorm(width, rngs=rngs)
        self.mlp = Mlp(width, mlp_dim, rngs=rngs, dropout_rate=dropout,
                       gelu_approximate=gelu_approximate)
        self.ls1 = LayerScale(width, layerscale) if layerscale else None
        self.ls2 = LayerScale(width, layerscale) if layerscale else None
        self.dropout_rate = dropout

    def __call__(self, x: Array, *, key: Array | None = None, drop_path_rate: Array | float = 0.0,
                 return_weights: bool = False,
                 segment_ids: Array | None = None) -> tuple[Array, Array | None]:
        keys = [None] * 6 if key is None else list(jax.random.split(key, 6))
        y, weights = self.attn(x, key=keys[0], return_weights=return_weights,
                               input_norm=self.norm1, segment_ids=segment_ids)
        y = dropout(y, self.dropout_rate, keys[1])
        y = self.ls1(y) if self.ls1 is not None else y
        x = x + drop_path(y, drop_path_rate, keys[2] if _active(drop_path_rate) else None)
        y = dropout(self.mlp(x, keys[3], input_norm=self.norm2), self.dropout_rate, keys[4])
        y = self.ls2(y) if self.ls2 is not None else y
        x = x + drop_path(y, drop_path_rate, keys[5] if _active(drop_path_rate) else None)
        return x, weights


def _active(rate) -> bool:
    return not (isinstance(rate, int | float) and rate == 0.0)


def stack_blocks(blocks: list[Block]) -> Block:
    """Loop form -> scan form: one Block whose parameters have a leading layer axis."""
    graphdef, *_ = nnx.split(blocks[0])
    states = [nnx.state(b) for b in blocks]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    return nnx.merge(graphdef, stacked)


def unstack_blocks(stacked: Block) -> list[Block]:
    """Scan form -> loop form."""
    graphdef, state = nnx.split(stacked)
    depth = jax.tree.leaves(state)[0].shape[0]
    return [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(depth)]


class Encoder(nnx.Module):
    """``depth`` blocks and the final LayerNorm."""

    def __init__(self, depth: int, width: int, mlp_dim: int, num_heads: int, *, rngs: nnx.Rngs,
                 scan: bool = False, remat_policy: str = "none", drop_path: float = 0.0,
                 **block_kw):
        if remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"unknown remat_policy {remat_policy!r}; valid: {tuple(REMAT_POLICIES)}"
            )
        blocks = [Block(width, mlp_dim, num_heads, rngs=rngs, **block_kw) for _ in range(depth)]
        self.scan = scan
        self.depth = depth
        self.remat_policy = remat_policy
        # Stochastic depth grows linearly with depth (timm / DeiT convention).
        self.drop_path_rates = tuple(float(drop_path * i / max(depth - 1, 1)) for i in range(depth))
        self.blocks = stack_blocks(blocks) if scan else nnx.List(blocks)
        self.norm = LayerNorm(width, rngs=rngs)

    def _block_fn(self, graphdef, return_weights: bool):
        def run(state, x, key, rate, segment_ids):
            block = nnx.merge(graphdef, state)
            return block(x, key=key, drop_path_rate=rate, return_weights=return_weights,
                         segment_ids=segment_ids)

        policy = REMAT_POLICIES[self.remat_policy]
        if self.remat_policy == "none":
            return run
        return jax.checkpoint(run, policy=policy, prevent_cse=not self.scan)

    def __call__(self, x: Array, *, key: Array | None = None, return_weights: bool = False,
                 segment_ids: Array | None = None) -> tuple[Array, Array | None]:
        """``segment_ids`` (B, N): packed sequences, attention kept inside each segment."""
        keys = jax.random.split(key, self.depth) if key is not None else None
        stochastic = key is not None and any(self.drop_path_rates)
        if self.scan:
            graphdef, state = nnx.split(self.blocks)
            run = self._block_fn(graphdef, return_weights)
            rates = jnp.asarray(self.drop_path_rates, jnp.float32) if stochastic else None

            def body(carry, layer):
                st, k, rate = layer
                return run(st, carry, k, 0.0 if rate is None else rate, segment_ids)

            x, weights = jax.lax.scan(body, x, (state, keys, rates))
        else:
            weights = []
            for i, block in enumerate(self.blocks):
                graphdef, state = nnx.split(block)
                run = self._block_fn(graphdef, return_weights)
                rate = self.drop_path_rates[i] if stochastic else 0.0
                x, w = run(state, x, None if keys is None else keys[i], rate, segment_ids)
                weights.append(w)
            weights = jnp.stack(weights) if return_weights else None
        return self.norm(x), weights
