"""The default job (`make train`): a small ViT on the embedded `digits` data (real 8x8 digits).

  python -m vit_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

The digits are upsampled to 16x16 and cut into 4x4 patches (16 tokens + a class token). About
2 minutes on 2 CPU cores; see the README for the accuracy to expect. The harder procedural
`shapes` set is one override away: `--config.data.name=shapes` plus its pp strings (see
`configs/small_data.py`).
"""

from vit_jax.config import base_config, model_config, takes_no_argument


def get_config(arg: str | None = None):
    takes_no_argument(arg, __file__)
    c = base_config()
    c.total_steps = 500
    c.batch_size = 128
    c.data.name = "digits"
    c.data.pp_train = ("decode|resize(16)|random_crop(16, pad=2)|to_rgb|value_range(-1,1)"
                       "|onehot(10, label_smoothing=0.1)")
    c.data.pp_eval = "decode|resize(16)|to_rgb|value_range(-1,1)|onehot(10)"
    # The seed-004 "ViT-Tiny" shape: width 128, depth 6, 4 heads, MLP 512 (1.2M parameters).
    c.model = model_config("Ti/4", image_size=16, width=128, depth=6, num_heads=4, mlp_dim=512)
    c.optim.update(name="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
                   warmup_steps=50, grad_clip_norm=1.0)
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.log_every_steps = 25
    c.eval_batch_size = 128
    return c
