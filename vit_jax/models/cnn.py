"""CNN baselines with the ViT call interface, for the ViT-vs-CNN small-data comparison.

The defaults give the parameter counts of the baselines that comparison reports (hence
``hidden=346``), so ours are the same size as theirs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.models.layers import Dense, dropout, param

Array = jax.Array


class Conv(nnx.Module):
    """3x3 (or kxk) 'SAME' convolution, NHWC."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, kernel: int = 3, stride: int = 1,
                 use_bias: bool = True):
        init = nnx.initializers.he_normal()
        self.kernel = param(rngs, init, (kernel, kernel, cin, cout),
                            ("patch", "patch", "channels", "embed"))
        self.bias = (param(rngs, nnx.initializers.zeros_init(), (cout,), ("embed",))
                     if use_bias else None)
        self.stride = stride

    def __call__(self, x: Array) -> Array:
        y = jax.lax.conv_general_dilated(x, self.kernel[...].astype(x.dtype),
                                         (self.stride, self.stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class GroupNorm(nnx.Module):
    """GroupNorm: batch-independent, so train and eval agree and no running stats to checkpoint."""

    def __init__(self, channels: int, groups: int = 8, *, rngs: nnx.Rngs):
        self.scale = nnx.Param(jnp.ones((channels,)), logical_axes=("embed",))
        self.bias = nnx.Param(jnp.zeros((channels,)), logical_axes=("embed",))
        self.groups = groups

    def __call__(self, x: Array) -> Array:
        b, h, w, c = x.shape
        g = x.reshape(b, h, w, self.groups, c // self.groups).astype(jnp.float32)
        mean = g.mean(axis=(1, 2, 4), keepdims=True)
        var = g.var(axis=(1, 2, 4), keepdims=True)
        g = ((g - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(b, h, w, c)
        return (g * self.scale[...] + self.bias[...]).astype(x.dtype)


def _max_pool(x: Array) -> Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class SimpleCNN(nnx.Module):
    """Three conv-relu-pool stages, global average pooling, a dropout and a linear head."""

    def __init__(self, *, num_classes: int, in_channels: int = 3,
                 channels: tuple[int, ...] = (32, 64, 128), hidden: int = 346,
                 dropout: float = 0.0, seed: int = 0, rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(params=seed, dropout=seed + 1)
        dims = (in_channels, *channels)
        self.convs = nnx.List([Conv(a, b, rngs=rngs) for a, b in zip(dims, dims[1:], strict=False)])
        self.fc = Dense(channels[-1], hidden, rngs=rngs, axes=("embed", "mlp"),
                        kernel_init=nnx.initializers.he_normal())
        self.head = Dense(hidden, num_classes, rngs=rngs, axes=("mlp", "classes"))
        self.dropout_rate = dropout
        self.rngs = rngs

    def __call__(self, images: Array, *, train: bool = False, rng: Array | None = None, **_):
        x = images.astype(jnp.float32)
        for conv in self.convs:
            x = _max_pool(jax.nn.relu(conv(x)))
        x = jax.nn.relu(self.fc(x.mean(axis=(1, 2))))
        key = (rng if rng is not None else self.rngs.dropout()) if train and self.dropout_rate \
            else None
        return self.head(dropout(x, self.dropout_rate, key))


class ResidualBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv(cin, cout, rngs=rngs, stride=stride, use_bias=False)
        self.norm1 = GroupNorm(cout, rngs=rngs)
        self.conv2 = Conv(cout, cout, rngs=rngs, use_bias=False)
        self.norm2 = GroupNorm(cout, rngs=rngs)
        self.shortcut = (Conv(cin, cout, rngs=rngs, kernel=1, stride=stride, use_bias=False)
                         if stride != 1 or cin != cout else None)

    def __call__(self, x: Array) -> Array:
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        skip = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.relu(y + skip)


class SmallResNet(nnx.Module):
    """A conv stem and three residual stages (16, 32, 64 channels), global pooling, linear head."""

    def __init__(self, *, num_classes: int, in_channels: int = 3,
                 channels: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 2,
                 seed: int = 0, rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(params=seed)
        self.stem = Conv(in_channels, channels[0], rngs=rngs, use_bias=False)
        self.stem_norm = GroupNorm(channels[0], rngs=rngs)
        blocks, cin = [], channels[0]
        for i, cout in enumerate(channels):
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(ResidualBlock(cin, cout, stride, rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head = Dense(cin, num_classes, rngs=rngs, axes=("embed", "classes"))

    def __call__(self, images: Array, **_) -> Array:
        x = jax.nn.relu(self.stem_norm(self.stem(images.astype(jnp.float32))))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))
