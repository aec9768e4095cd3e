"""Shared test fixtures: a tiny, fast experiment config on the embedded digits data, and the
attention kernels' forward/backward and memory probes."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from vit_jax.config import base_config, model_config

DATA_DIR = os.environ.setdefault("VIT_JAX_DATA_DIR",
                                 os.path.join(os.path.dirname(__file__), "..", ".cache", "tfds"))


def tiny_config(**changes):
    """A 2-layer ViT on 8x8 digits: a few steps take well under a second."""
    c = base_config()
    c.total_steps = 30
    c.batch_size = 32
    c.eval_batch_size = 96
    c.data.name = "digits"
    c.data.pp_train = "decode|value_range(-1,1)|onehot(10)"
    c.data.pp_eval = "decode|value_range(-1,1)|onehot(10)"
    c.model = model_config("mu/4", image_size=8, in_channels=1, width=32, depth=2, num_heads=2,
                           mlp_dim=64)
    c.optim.update(lr=3e-3, warmup_steps=5, weight_decay=1e-4, grad_clip_norm=1.0)
    c.log_every_steps = 10
    c.eval_every_steps = 15
    c.checkpoint_every_steps = 15
    c.checkpoint.async_save = False
    c.update_from_flattened_dict(changes)
    return c


def tiny_packed_config(**changes):
    """tiny_config trained on packed sequences (NaViT): digits at 4-16 px, 32 tokens, <= 6
    images each, fractional factorised positions, token dropping."""
    c = tiny_config(**changes)
    c.data.pp_train = "decode|resize_native(4, 16, multiple=4)|value_range(-1,1)|onehot(10)"
    c.data.packing = {"seq_len": 32, "max_images": 6, "patch_size": 4, "token_drop": 0.25}
    c.model.update(class_token=False, pool="gap", posemb="factorized_fractional")
    return c


def get_config(arg: str | None = None):
    """Lets the CLI run the tiny configs: ``--config=tests/helpers.py[:packed]``."""
    if arg not in (None, "packed"):
        raise ValueError(f"unknown argument {arg!r}; valid: packed (or none)")
    return tiny_packed_config() if arg else tiny_config()


def attention_out_and_grads(fn, q, k, v, ct=None):
    """Output and d(sum(out * ct))/d(q, k, v), jitted; ``ct`` defaults to a fixed random
    cotangent."""
    if ct is None:
        ct = jax.random.normal(jax.random.key(7), q.shape[:3] + v.shape[3:], jnp.float32)

    @jax.jit
    def run(q, k, v):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(ct.astype(out.dtype))

    return run(q, k, v)


def attention_temp_bytes(fn, n, *, segmented=False, b=1, h=4, d=32) -> int:
    """XLA's compiled temp memory of forward + backward of ``fn(q, k, v)`` at ``n`` tokens
    (``segment_ids`` passed when ``segmented``: packed sequences)."""
    spec = jax.ShapeDtypeStruct((b, h, n, d), jnp.float32)
    seg = jax.ShapeDtypeStruct((b, n), jnp.int32)

    def loss(q, k, v, s):
        return jnp.sum((fn(q, k, v, segment_ids=s) if segmented else fn(q, k, v)) ** 2)

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2))
    return jax.jit(grad).lower(spec, spec, spec, seg).compile().memory_analysis().temp_size_in_bytes
