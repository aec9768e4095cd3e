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
# The study's answer and its limits, ending its results.md (written once its runs were in).
CONCLUSION = """
At the same 500 steps of 128 images, the one FlexiViT model (each size drawn for ~100 of them)
stays far below each of the five models trained separately at patch 16 to 2 (78.8 / 78.1 / 59.3
/ 71.4% against 97.6 / 99.0 / 95.3 / 97.6%) and beats its separate model only for pixel tokens
(56.6% against 51.5%): sharing weights with the coarser sizes helps the size that learns
slowest. The five separate models used five times the steps between them; FlexiViT's result
(one model as good as each separately trained one) comes from long ImageNet schedules, which
this CPU run does not reach, so it is not tested here. Oddly the underlying patch size, 4, is
the weakest of the non-pixel sizes (59.3%); one seed cannot say whether that is noise."""
LIMITS = """
One seed, one small ViT (width 96, depth 4), the 16x16 digits with 297 test images (one image
is 0.34 points), uniform size sampling, a 4x4 underlying kernel and position table; the
separately trained models are the patch-size study's single-seed runs. Longer schedules,
FlexiViT's larger underlying kernel and its distillation initialisation are not tried. Runs
shared the 2 cores with other studies (wall times are upper bounds)."""


def get_config(arg: str | None = None):
    takes_no_argument(arg, __file__)
    return flexi_sweep_config(
        "flexivit", load_config_file(CONFIGS / "flexivit.py"), compare=str(SEPARATE),
        conclusion=CONCLUSION, limits=LIMITS,
        description=("configs/flexivit.py: one ViT trained with a random patch size per step "
                     "(16, 8, 4, 2 or 1 on the 16x16 digits), evaluated at each size, beside "
                     "the patch-size study's five models trained one per size for the same "
                     "500 steps."))
