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
# Each real-data study's answer and its limits, ending its results.md (written once its runs
# were in; the table above them is the harness's own).
ANSWERS = {
    "mnist": dict(
        conclusion="""
On the first 5,000 real MNIST training images with seed 004's protocol, both CNNs beat the
ViT-Tiny by about 7.4 points of test accuracy (SimpleCNN 97.70 ± 0.14%, SmallResNet 97.71 ±
0.06%, ViT-Tiny 90.26 ± 0.81%, n = 3 each; the intervals separate), with 7-9x fewer parameters:
seed 004's ordering holds on real data. Its diagnosis does not: here the ViT fits its 5,000
training images perfectly (100.0% train accuracy on every seed) where the CNNs stop at
99.6-99.9%, so the ViT's gap is one of generalisation (no locality prior to learn from few
images), not under-fitting as on seed 004's CIFAR-10 (54% train).""",
        limits="""
MNIST, not CIFAR-10 (not available offline): an easier task, on which every model nearly fits
its training set; one training recipe per model (seed 004's), no tuning per model; 3 seeds; the
attention and position maps of these checkpoints are in maps/maps.md (learned positions not
local: locality -0.12 ± 0.02; last-layer attention entropy 0.81 ± 0.03); wall times were
measured with the study pinned to one core beside other jobs, and points preempted for CI
include their restarts."""),
    "shapes": dict(
        conclusion="""
On 5,000 training images of the procedural 32x32 shapes (6 classes, chance 16.7%) with seed
004's protocol, both CNNs beat the ViT-Tiny and the intervals separate: SmallResNet 77.77 ±
4.29%, SimpleCNN 49.13 ± 1.42%, ViT-Tiny 38.77 ± 1.02% test accuracy (n = 3 each), with 7-9x
fewer parameters: seed 004's verdict holds again (its two CNNs swap places: here the residual
net leads by 29 points). Its diagnosis does not, as on MNIST: the ViT reaches 69.45 ± 3.81% on
its own training images, 31 points above its test accuracy, where SimpleCNN's gap is 13 points
(62.56% train) and SmallResNet's 8 (86.04%); the ViT over-fits the few images it has instead of
under-fitting as on seed 004's CIFAR-10 (53.5% train, 49.6% test). Its learned positions did
not become local (locality -0.09 ± 0.02, maps/maps.md).""",
        limits="""
Procedural shapes, not CIFAR-10 (not available offline); 3 seeds, and SmallResNet's spread is
wide (73.2-81.7%); one training recipe per model (seed 004's), no tuning per model; wall times
were measured with the study pinned to one core beside the session's other work (tests and a
CI run), and ViT-Tiny seed 0's wall counts only the half it ran after resuming from step 585
in a later session. The points were evaluated a second time from their final checkpoints (an
option added to the code mid-study changed their config records): the same accuracies, the
img/s columns from that quiet re-run, the walls the study's plus that re-run's ~15 s."""),
}


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
        **ANSWERS.get(suffix.removeprefix("_"), {}),
        description=(
            "Seed 004's protocol (configs/small_data.py) for each model. Best eval acc = best "
            "test accuracy over the evals (every 5 epochs); final train acc = the final model "
            "on its training subset."))
