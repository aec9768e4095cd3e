"""NaViT-style training: every image at its own resolution, several packed into each sequence.

  python -m vit_jax.main --config=configs/navit.py --workdir=runs/navit

The embedded digits, each resized so its side is drawn in 8-28 px (NaViT's resolution sampling,
``resize_native``; whole 4×4 patches, 4-49 per image) and packed online into sequences of 64
tokens holding up to 8 images (``data.packing``; ``vit_jax/data/packed.py``), 32 sequences per
step. The ViT pools each image on its own (``gap``, no class token) and takes its positions
from fixed 2D sin-cos tables, which cover every grid. Evaluation is the ordinary fixed-size
pipeline at 16 px (``eval/``) and, packed, each image within 16 patches (``native/``;
``vit_jax/evaluators/packed.py``); ``configs/sweeps/navit.py`` draws accuracy against the
budget. ``train/padding`` (the fraction of padding tokens) and ``train/images`` (images
per step) are logged beside the loss.
"""

from vit_jax.config import base_config, model_config, takes_no_argument


def get_config(arg: str | None = None):
    takes_no_argument(arg, __file__)
    c = base_config()
    c.total_steps = 500
    c.batch_size = 32  # sequences per step
    c.data.name = "digits"
    c.data.pp_train = ("decode|resize_native(8, 28, multiple=4)|to_rgb|value_range(-1,1)"
                       "|onehot(10, label_smoothing=0.1)")
    c.data.pp_eval = "decode|resize(16)|to_rgb|value_range(-1,1)|onehot(10)"
    c.data.packing = dict(seq_len=64, max_images=8, patch_size=4, token_drop=0.0)
    c.model = model_config("Ti/4", image_size=16, width=128, depth=6, num_heads=4, mlp_dim=512,
                           class_token=False, pool="gap", posemb="sincos2d")
    c.optim.update(lr=1e-3, warmup_steps=50, weight_decay=0.05, grad_clip_norm=1.0)
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.log_every_steps = 20
    c.eval_batch_size = 128
    # Also at native resolution: each eval image at 16 patches of 4 px, 4 per packed sequence.
    c.evals.native = dict(kind="packed", max_tokens=16, max_images=4,
                          pp="decode|resize_tokens(16, 4)|to_rgb|value_range(-1,1)|onehot(10)")
    return c
