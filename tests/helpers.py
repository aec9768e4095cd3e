"""Shared test fixtures: a tiny, fast experiment config on the embedded digits data."""

from __future__ import annotations

import os

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


def get_config(arg: str | None = None):
    """Lets the CLI run the tiny config: ``--config=tests/helpers.py``."""
    return tiny_config()
