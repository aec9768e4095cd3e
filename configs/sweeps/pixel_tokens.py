"""Why pixel tokens stayed at chance: one factor at a time, measured (seed 003, MNIST 28x28).

  python -m vit_jax.sweep --config=configs/sweeps/pixel_tokens.py:/path/to/mnist \
      --workdir=runs/sweeps/pixel_tokens

The argument is the folder of the four MNIST IDX files. The base is the recipe under which the
old patch-size study's pixel tokens never left chance (learned position embeddings, AdamW lr
1e-3, short warmup), on a ViT small enough to train 785 tokens per image on a CPU (width 64,
depth 2, patch 1). Each point changes one thing: the position embedding (fixed 2D sin-cos, or
none), a lower learning rate, or the patch size (4, a control that is known to learn). Every
point records its attention entropy and how loud the position embeddings are next to the patch
content, before and after training (``measure.internals``).
"""

from pathlib import Path

from vit_jax.config import load_config_file
from vit_jax.sweep import sweep_config


def get_config(arg: str | None = None):
    if not arg:
        raise ValueError("pass the MNIST folder: configs/sweeps/pixel_tokens.py:/path/to/mnist")
    # the patch-size study's model and data, with the old study's recipe at patch 1
    c = load_config_file(Path(__file__).resolve().parent / "patch_size.py", f"mnist:{arg}").base
    c.total_steps = 300
    c.model.update(patch_size=1, posemb="learn")
    c.optim.warmup_steps = 30
    c.eval_every_steps = c.checkpoint_every_steps = 300
    c.log_every_steps = 25
    c.eval_batch_size = 512
    points = [
        {"name": "pixels,learn"},
        {"name": "pixels,sincos2d", "model.posemb": "sincos2d"},
        {"name": "pixels,none", "model.posemb": "none"},
        {"name": "pixels,learn,lr=3e-4", "optim.lr": 3e-4},
        {"name": "patch4,learn", "model.patch_size": 4},
    ]
    return sweep_config(
        "pixel_tokens", c, points, x_key="name", x_label="point", plots=["accuracy_vs_x"],
        measure={"throughput_steps": 2, "internals": True},
        table_columns=["name", "tokens", "gflops", "final_accuracy", "final_loss",
                       "attn_entropy_first_init", "attn_entropy_first", "attn_entropy_last",
                       "position_signal_init", "position_signal", "train_img_s",
                       "wall_seconds", "status"],
        description=("Pixel tokens (patch 1, 785 tokens) on MNIST under the old study's recipe, "
                     "one factor changed per point."))
