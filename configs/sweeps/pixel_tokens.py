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
                     "one factor changed per point."),
        conclusion=CONCLUSION, limits=LIMITS)


CONCLUSION = """Pixel tokens are not stuck at chance on MNIST under the old recipe: after 300 steps
they reach 25-31% (chance 10%) where patch 4 reaches 53% with the same steps. What holds them
back, measured: their attention stays close to uniform (first-layer entropy 0.93-0.995 of the
maximum after training, patch 4: 0.83), so the class token averages ~785 tokens; and learned
positions start 50x quieter than the pixel content (RMS ratio 0.018) and hardly grow in 300
steps (0.027), so the encoder barely knows where a pixel is: no positions at all (26.3%) do as
well as learned ones (24.8%). Fixed 2D sin-cos positions, as loud as the content from the first
step (ratio 0.65), do best (30.9%); a lower learning rate (3e-4: 26.0%) changes little. The old
shapes study's pixel point (17.6%, chance 16.7%) combined this with a harder task and a
compute-bound budget: pixel tokens need far more steps than patch tokens and positions that are
heard. The MNIST studies use sin-cos positions."""
LIMITS = """One seed per point (a diagnosis, not a study): differences of a few points may be
noise, so only the measured mechanisms (near-uniform attention, near-silent learned positions)
are claimed, not the ranking. 300 steps of 64 images (a third of an epoch) on a 2-layer,
64-wide ViT. Not varied: warmup length, a larger initial scale of the learned table, the patch
projection's init (for grey images every pixel token's content is one vector times the pixel
value plus a bias)."""
