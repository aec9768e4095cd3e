"""FlexiViT (Beyer et al. 2023): one ViT trained for every patch size at once.

  python -m vit_jax.main --config=configs/flexivit.py --workdir=runs/flexivit

Each step draws a patch size from `model.flexi_patch_sizes` (uniformly; `model.flexi_weights`
to weight them); the 4x4 patch kernel is PI-resized to it and the 4x4 learned position table
resampled to its grid inside the step. Everything else is the patch-size study on the embedded
digits (`configs/sweeps/patch_size.py:digits`: 16x16, a 4-layer, 96-wide ViT, 500 steps of
128), so `configs/sweeps/flexivit.py` can draw this one model beside the five it trains
separately. The run evaluates at every size (`eval_p16/accuracy`, ...; `eval` is patch 4).
About 3 minutes on 2 CPU cores.
"""

from pathlib import Path

from vit_jax.config import load_config_file, takes_no_argument

CONFIGS = Path(__file__).resolve().parent
PATCH_SIZES = (16, 8, 4, 2, 1)


def get_config(arg: str | None = None):
    takes_no_argument(arg, __file__)
    c = load_config_file(CONFIGS / "sweeps" / "patch_size.py", "digits").base
    c.model.patch_size = 4  # the underlying kernel and position grid (4x4)
    c.model.flexi_patch_sizes = PATCH_SIZES
    for p in PATCH_SIZES:
        if p != c.model.patch_size:
            c.evals[f"eval_p{p}"] = {"kind": "classification", "patch_size": p}
    return c
