"""Resolution sweep: one checkpoint evaluated at 8-32 px with every position-resampling method.

  python -m vit_jax.sweep --config=configs/sweeps/resolution.py --workdir=runs/sweeps/resolution
  python -m vit_jax.sweep --config=configs/sweeps/resolution.py --workdir=runs/sweeps/res_qs \
      --config.init_from=runs/quickstart

Without `init_from` the quickstart run (digits upsampled to 16x16, patch 4: a 4x4 grid) is
trained first. Then, for each resolution and each method of `vit_jax.models.resample.METHODS`,
the learned positions are resampled to the new grid (2x2 ... 8x8) and the model is evaluated as
is and after a 50-step SGD fine-tune at that resolution (the `configs/finetune.py` recipe). The
digits are 8x8 images, so no resolution adds detail: the sweep isolates what resampling the
positions (and rescaling the strokes) costs. `base` and the pp templates must describe the
checkpoint's model and data. About 20 minutes on 2 CPU cores; the argument `smoke` trains 30
steps, uses 2 methods, 3 resolutions and 5 fine-tune steps.

`mnist:DIR` is the study on real data: the patch-size study's small ViT at patch 7 with learned
positions trained on MNIST at 28x28 (a 4x4 grid; DIR: its IDX files) once per seed 0, 1, 2,
each checkpoint evaluated at 14, 21, 28, 42 and 56 px (2x2 ... 8x8 grids) with every method, as
is and after 50 fine-tuning steps.
"""

from pathlib import Path

from vit_jax.config import load_config_file
from vit_jax.sweep import resolution_sweep_config

CONFIGS = Path(__file__).resolve().parent.parent
# configs/finetune.py's recipe, shortened: SGD momentum 0.9, low lr, warmup, clipping.
FINETUNE = dict(batch_size=64, optim=dict(name="sgd", momentum=0.9, lr=0.01, weight_decay=0.0,
                                          schedule="cosine", warmup_steps=5, grad_clip_norm=1.0))


def get_config(arg: str | None = None):
    if arg and arg.startswith("mnist:"):
        return mnist_study(arg.removeprefix("mnist:"))
    if arg not in (None, "smoke"):
        raise ValueError(f"unknown argument {arg!r}; valid: smoke, mnist:DIR (or none)")
    base = load_config_file(CONFIGS / "quickstart.py")
    c = resolution_sweep_config(
        "resolution" + ("_smoke" if arg else ""), base, resolutions=[8, 12, 16, 24, 32],
        finetune_steps=50,
        # quickstart's pipelines with the resize made a template (no augmentation to fine-tune)
        pp_train="decode|resize({res})|to_rgb|value_range(-1,1)|onehot(10)",
        pp_eval="decode|resize({res})|to_rgb|value_range(-1,1)|onehot(10)",
        description=("Quickstart ViT (patch 4) trained at 16x16; learned positions resampled "
                     "to each eval resolution's grid."))
    c.finetune = FINETUNE
    if arg == "smoke":
        base.total_steps, base.optim.warmup_steps = 30, 5
        base.eval_every_steps = base.checkpoint_every_steps = base.log_every_steps = 15
        c.resolutions, c.methods, c.finetune_steps = [8, 16, 24], ["bilinear", "zoom"], 5
        c.finetune.optim.warmup_steps = 1
    return c


def mnist_study(folder: str):
    base = load_config_file(CONFIGS / "sweeps" / "patch_size.py", f"mnist:{folder}").base
    base.model.patch_size, base.model.posemb = 7, "learn"
    base.eval_batch_size = 1000
    pp = "decode(1)|resize({res})|value_range(-1,1)|onehot(10)"
    c = resolution_sweep_config(
        "resolution_mnist", base, resolutions=[14, 21, 28, 42, 56], finetune_steps=50,
        pp_train=pp, pp_eval=pp, seeds=[0, 1, 2], measure={"throughput_steps": 2},
        description=("Small ViT (patch 7, learned positions) trained on MNIST at 28x28, one "
                     "checkpoint per seed; positions resampled to each eval resolution's grid."))
    c.finetune = FINETUNE
    return c
