"""The default job (`make train`): a small ViT on the embedded procedural `shapes` dataset.

  python -m vit_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

About 3 minutes on 2 CPU cores; see the README for the accuracy to expect.
"""

from vit_jax.config import base_config, model_config


def get_config(arg: str | None = None):
    c = base_config()
    c.total_steps = 600
    c.batch_size = 128
    c.data.name = "shapes"
    c.data.shapes = dict(image_size=32, num_train=10_000, num_test=2_000, seed=0)
    c.data.pp_train = "decode|flip_lr|value_range(-1,1)|onehot(6)"
    c.data.pp_eval = "decode|value_range(-1,1)|onehot(6)"
    # The seed-004 "ViT-Tiny": width 128, depth 6, 4 heads, patch 4 -> 65 tokens at 32x32.
    c.model = model_config("Ti/4", image_size=32, width=128, depth=6, num_heads=4, mlp_dim=512)
    c.optim.update(name="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
                   warmup_steps=60, grad_clip_norm=1.0)
    c.eval_every_steps = 200
    c.checkpoint_every_steps = 200
    c.log_every_steps = 50
    return c
