"""FlexiViT against one model per patch size, on the same data and steps.

  python -m vit_jax.sweep --config=configs/sweeps/flexivit.py --workdir=runs/sweeps/flexivit

Trains `configs/flexivit.py` (one model, a random patch size each step) and evaluates its
checkpoint at patch 16, 8, 4, 2 and 1; the table and plots put it beside the five models the
patch-size study trained separately on the same digits for the same 500 steps
(docs/results/patch_size_digits/). `--config.init_from=runs/flexivit` evaluates a run you
trained instead. About 4 minutes on 2 CPU cores.
"""

from pathlib import Path

from vit_jax.config import load_config_file, takes_no_argument
from vit_jax.sweep import flexi_sweep_config

CONFIGS = Path(__file__).resolve().parent.parent
SEPARATE = CONFIGS.parent / "docs" / "results" / "patch_size_digits" / "results.json"


def get_config(arg: str | None = None):
    takes_no_argument(arg, __file__)
    return flexi_sweep_config(
        "flexivit", load_config_file(CONFIGS / "flexivit.py"), compare=str(SEPARATE),
        description=("configs/flexivit.py: one ViT trained with a random patch size per step "
                     "(16, 8, 4, 2 or 1 on the 16x16 digits), evaluated at each size, beside "
                     "the patch-size study's five models trained one per size for the same "
                     "500 steps."))
