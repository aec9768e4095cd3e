"""Seed 004: ViT-Tiny vs SimpleCNN vs SmallResNet on a 5,000-image training subset.

  python -m vit_jax.sweep --config=configs/sweeps/vit_vs_cnn.py --workdir=runs/sweeps/vit_vs_cnn

Each model runs with its own `configs/small_data.py` protocol (30 epochs of the 5,000-image
subset of the embedded shapes data, AdamW lr 1e-3, wd 0.01, label smoothing 0.1, warmup 5 epochs
for the ViT and 3 for the CNNs). The table has parameters, best test accuracy and the final
model's accuracy on its 5,000 training images (the eval pipeline, no augmentation), so it shows
who over- and who under-fits. The argument `smoke` runs 20 steps per model; `mnist:DIR` runs the
protocol on the first 5,000 images of the real MNIST (DIR: its IDX files) and `shapes` on the
embedded shapes, both with seeds 0, 1, 2.
"""

from pathlib import Path

from vit_jax.config import load_config_file
from vit_jax.sweep import sweep_config

CONFIGS = Path(__file__).resolve().parent.parent
MODELS = {"ViT-Tiny": "vit", "SimpleCNN": "SimpleCNN", "SmallResNet": "SmallResNet"}


def get_config(arg: str | None = None):
    if arg not in (None, "smoke", "shapes") and not (arg or "").startswith("mnist:"):
        raise ValueError(f"unknown argument {arg!r}; valid: smoke, shapes, mnist:DIR (or none)")
    dataset = f",{arg}" if arg and arg.startswith("mnist:") else ""
    bases = {name: load_config_file(CONFIGS / "small_data.py", small_data_arg + dataset)
             for name, small_data_arg in MODELS.items()}
    if arg == "smoke":
        for c in bases.values():
            c.total_steps, c.optim.warmup_steps = 20, 5
            c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 10
    suffix = {None: "", "smoke": "_smoke", "shapes": "_shapes"}.get(arg, "_mnist")
    study = arg == "shapes" or bool(dataset)  # the real-data studies: three seeds per model
    return sweep_config(
        "vit_vs_cnn" + suffix, bases["ViT-Tiny"],
        [{"name": model, "base": model} for model in MODELS], bases=bases,
        seeds=[0, 1, 2] if study else [],
        eval_train=True, x_key="name", x_label="model", plots=["accuracy_vs_x"],
        table_columns=["name", "params", "gflops", "best_accuracy", "train_accuracy",
                       "final_accuracy", "final_loss", "train_img_s", "eval_img_s",
                       "peak_memory_mib", "wall_seconds", "status"],
        measure={"throughput_steps": 5, "internals": study},
        description=(
            "Seed 004's protocol (configs/small_data.py) for each model. Best eval acc = best "
            "test accuracy over the evals (every 5 epochs); final train acc = the final model "
            "on its training subset."))
