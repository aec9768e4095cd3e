"""Position-embedding sweep (seed 003): learned vs fixed 2D sin-cos vs none.

  python -m vit_jax.sweep --config=configs/sweeps/posemb.py --workdir=runs/sweeps/posemb

The quickstart run (seed 004's ViT-Tiny shape, digits upsampled to 16x16, patch 4 -> 16
patches) three times, changing only `model.posemb`. Without positions the encoder is
permutation-equivariant over patches: what is where is lost, only which patches occur remains.
The argument `smoke` runs 20 steps per point. About 10 minutes on 2 CPU cores.
"""

from pathlib import Path

from vit_jax.config import load_config_file
from vit_jax.sweep import sweep_config

CONFIGS = Path(__file__).resolve().parent.parent


def get_config(arg: str | None = None):
    if arg not in (None, "smoke"):
        raise ValueError(f"unknown argument {arg!r}; valid: smoke (or none)")
    c = load_config_file(CONFIGS / "quickstart.py")
    if arg == "smoke":
        c.total_steps, c.optim.warmup_steps = 20, 5
        c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 10
    points = [{"model.posemb": kind} for kind in ("learn", "sincos2d", "none")]
    return sweep_config(
        "posemb" + ("_smoke" if arg else ""), c, points, x_key="model.posemb",
        x_label="position embedding", plots=["accuracy_vs_x"],
        description="configs/quickstart.py with each position embedding.")
