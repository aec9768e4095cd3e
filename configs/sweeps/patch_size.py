"""Patch-size sweep (seed 003): patch 16, 8, 4, 2, 1 at a fixed image size, down to pixel tokens.

  python -m vit_jax.sweep --config=configs/sweeps/patch_size.py --workdir=runs/sweeps/patch_size

The argument is the image size: `16` (default; the embedded shapes rendered at 16x16, so
1, 4, 16, 64 and 256 patch tokens, about 40 minutes on 2 CPU cores), `32` (4 ... 1,024 tokens;
patch 1 uses the O(N)-memory `chunked` attention; many hours on CPU) or `smoke` (patches 8 and
2 at 16x16, 20 steps: a minute or two). Everything but the patch size is fixed: a small ViT
(width 96, depth 4, 3 heads), the same data, steps and optimizer. With the image size fixed, a
smaller patch means more tokens and more compute per image (FLOPs and throughput columns) and,
per seed 003, better accuracy.
"""

from vit_jax.config import base_config, model_config
from vit_jax.models.attention import AUTO_CHUNK_MIN_TOKENS

PATCHES = (16, 8, 4, 2, 1)


def get_config(arg: str | None = None):
    arg = arg or "16"
    if arg not in ("16", "32", "smoke"):
        raise ValueError(f"unknown argument {arg!r}; valid: 16, 32, smoke")
    size = 16 if arg == "smoke" else int(arg)
    c = base_config()
    c.total_steps = 500
    c.batch_size = 128
    c.data.name = "shapes"
    c.data.shapes = dict(image_size=size, num_train=10_000, num_test=2_000, seed=0)
    c.data.pp_train = "decode|flip_lr|value_range(-1,1)|onehot(6)"
    c.data.pp_eval = "decode|value_range(-1,1)|onehot(6)"
    c.model = model_config("Ti/16", image_size=size, width=96, depth=4, num_heads=3,
                           mlp_dim=384)
    c.optim.update(name="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
                   warmup_steps=50, grad_clip_norm=1.0)
    c.eval_every_steps = c.checkpoint_every_steps = 250
    c.log_every_steps = 50
    c.eval_batch_size = 500
    patches = PATCHES
    if arg == "smoke":
        patches = (8, 2)
        c.total_steps, c.optim.warmup_steps = 20, 5
        c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 10

    sweep = {"name": f"patch_size_{arg}", "base": c, "x_key": "model.patch_size",
             "x_label": f"patch size (image {size}x{size})", "log_x": True}
    sweep["points"] = []
    for p in patches:
        point = {"model.patch_size": p}
        if (size // p) ** 2 >= AUTO_CHUNK_MIN_TOKENS:  # pixel tokens: N x N would not fit well
            point["model.attention"] = "chunked"
        sweep["points"].append(point)
    sweep["description"] = (
        f"ViT width 96, depth 4, 3 heads on shapes {size}x{size} (10,000 train / 2,000 test, "
        f"6 classes), {c.total_steps} steps of batch {c.batch_size}, AdamW lr 1e-3 cosine; "
        "only the patch size changes. Tokens include the class token.")
    return sweep_config(sweep)


def sweep_config(d: dict):
    import ml_collections as mlc

    base = d.pop("base")
    c = mlc.ConfigDict(d)
    c.base = base
    return c
