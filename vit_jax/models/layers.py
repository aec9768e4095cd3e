"""Small building blocks shared by the models: initialisers, dropout, drop-path, dtype casts.

Stochastic layers take an explicit PRNG key instead of holding an ``nnx.Rngs`` stream, so the
same block runs unchanged inside ``jax.lax.scan`` (one key per layer) and resumes are exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.models.contract import linear

Array = jax.Array


def param(rngs: nnx.Rngs, init, shape: tuple[int, ...], axes: tuple[str | None, ...],
          dtype=jnp.float32) -> nnx.Param:
    """A parameter tagged with logical axis names (read by ``vit_jax.sharding``)."""
    assert len(axes) == len(shape), (shape, axes)
    return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=axes)


def dropout(x: Array, rate: float, key: Array | None) -> Array:
    """Inverted dropout; identity when ``key`` is None (evaluation) or the rate is zero."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def drop_path(x: Array, rate: Array | float, key: Array | None) -> Array:
    """Stochastic depth: drop the whole residual branch per example.

    ``rate`` may be a traced per-layer value (scan over layers carries one rate per layer).
    """
    if key is None:
        return x
    keep_prob = 1.0 - jnp.asarray(rate, jnp.float32)
    keep = jax.random.bernoulli(key, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / keep_prob.astype(x.dtype), 0.0).astype(x.dtype)


def gelu(x: Array, approximate: bool = False) -> Array:
    """GELU. Exact: 0.5·x·(1 + erf(x/√2)), as timm and PyTorch; ``approximate``: the tanh form
    of Google's Flax ViTs.

    ``jax.nn.gelu(approximate=False)`` computes the same function through ``erfc``, which XLA:CPU
    lowers with an ``exp``; ``erf`` is a plain rational polynomial and faster (README,
    "Performance"). They agree to ~1e-6.
    """
    if approximate:
        return jax.nn.gelu(x, approximate=True)
    half = jnp.asarray(0.5, x.dtype)
    return half * x * (1 + jax.lax.erf(x * jnp.asarray(2 ** -0.5, x.dtype)))


class LayerNorm(nnx.Module):
    """LayerNorm, eps 1e-6 as Google ViT / timm, computed in float32 whatever the compute dtype."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, axis_name: str = "embed", eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32),
                               logical_axes=(axis_name,))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32), logical_axes=(axis_name,))
        self.eps = eps

    def normalize(self, x: Array) -> Array:
        """(x - mean) / std over the last axis, in float32, without the scale and shift."""
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps)

    def __call__(self, x: Array) -> Array:
        y = self.normalize(x)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)

    def feeding(self, x: Array, kernel: Array,
                bias: Array | None) -> tuple[Array, Array, Array | None]:
        """This norm applied to ``x`` where the result only feeds ``x @ kernel + bias``:
        returns (x', kernel', bias') with x' @ kernel' + bias' equal to LN(x) @ kernel + bias.

        With folding, x' is only normalised and the affine moves into the weights:
        LN(x) @ W + c = x̂ @ (scale[:, None] * W) + (shift @ W + c). The (D, out) weight
        products are tiny next to the (B·N, D) activations, which then skip the per-channel
        multiply-add forward and backward, and the backward pass keeps x̂ alone instead of x̂
        and LN(x), which lowers the train step's peak memory (README, "Performance"). Same
        function; rounding differs (~1e-6).
        """
        # jnp, not the operators: parameters may be NumPy arrays (freshly loaded), and NumPy
        # would compute these products with other rounding than XLA.
        scale, shift, kernel = (jnp.asarray(a) for a in (self.scale[...], self.bias[...], kernel))
        folded_bias = jnp.matmul(shift, kernel)
        return (self.normalize(x).astype(x.dtype), scale[:, None] * kernel,
                folded_bias if bias is None else folded_bias + bias)


class Dense(nnx.Module):
    """``x @ kernel + bias`` with the kernel cast to the compute dtype (params stay float32)."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs, axes: tuple[str, str],
                 kernel_init=None, bias_init=None, use_bias: bool = True):
        kernel_init = kernel_init or nnx.initializers.xavier_uniform()
        bias_init = bias_init or nnx.initializers.zeros_init()
        self.kernel = param(rngs, kernel_init, (din, dout), axes)
        self.bias = param(rngs, bias_init, (dout,), axes[1:]) if use_bias else None

    def __call__(self, x: Array, input_norm: LayerNorm | None = None) -> Array:
        """``x @ kernel + bias``, or ``input_norm(x) @ kernel + bias`` (see
        ``LayerNorm.feeding``: the norm's affine may be folded into the weights)."""
        kernel = self.kernel[...]
        bias = None if self.bias is None else self.bias[...]
        if input_norm is not None:
            x, kernel, bias = input_norm.feeding(x, kernel, bias)
        return linear(x, kernel, bias)
