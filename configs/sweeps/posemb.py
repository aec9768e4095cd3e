"""Position-embedding sweep (seed 003): learned vs fixed 2D sin-cos vs none.

  python -m vit_jax.sweep --config=configs/sweeps/posemb.py --workdir=runs/sweeps/posemb

The quickstart run (seed 004's ViT-Tiny shape, digits upsampled to 16x16, patch 4 -> 16
patches) three times, changing only `model.posemb`. Without positions the encoder is
permutation-equivariant over patches: what is where is lost, only which patches occur remains.
The argument `smoke` runs 20 steps per point. About 10 minutes on 2 CPU cores.

`mnist:DIR` is the study on real data: MNIST at 28x28 (DIR: its IDX files) with the patch-size
study's small ViT, each position embedding at patch 4 (600 steps) and at patch 1 (pixel tokens,
where seed 003 reports that positions matter little; 300 steps, for CPU time), seeds 0, 1, 2.
"""

from pathlib import Path

from vit_jax.config import load_config_file
from vit_jax.sweep import sweep_config

CONFIGS = Path(__file__).resolve().parent.parent


KINDS = ("learn", "sincos2d", "none")


def get_config(arg: str | None = None):
    if arg and arg.startswith("mnist:"):
        return mnist_study(arg.removeprefix("mnist:"))
    if arg not in (None, "smoke"):
        raise ValueError(f"unknown argument {arg!r}; valid: smoke, mnist:DIR (or none)")
    c = load_config_file(CONFIGS / "quickstart.py")
    if arg == "smoke":
        c.total_steps, c.optim.warmup_steps = 20, 5
        c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 10
    points = [{"model.posemb": kind} for kind in KINDS]
    return sweep_config(
        "posemb" + ("_smoke" if arg else ""), c, points, x_key="model.posemb",
        x_label="position embedding", plots=["accuracy_vs_x"],
        description="configs/quickstart.py with each position embedding.")


def mnist_study(folder: str):
    c = load_config_file(CONFIGS / "sweeps" / "patch_size.py", f"mnist:{folder}").base
    points = [{"name": f"patch4,{kind}", "model.posemb": kind} for kind in KINDS]
    points += [{"name": f"patch1,{kind}", "model.posemb": kind, "model.patch_size": 1,
                "total_steps": 300, "optim.warmup_steps": 30} for kind in KINDS]
    return sweep_config(
        "posemb_mnist", c, points, x_key="name", x_label="patch, position embedding",
        plots=["accuracy_vs_x"], seeds=[0, 1, 2],
        measure={"throughput_steps": 2, "internals": True},
        description=("Seed 003's position-embedding question on real data: MNIST 28x28, "
                     "learned / fixed 2D sin-cos / no position embeddings, at patch 4 (49 "
                     "tokens) and at patch 1 (784 pixel tokens)."))
