"""Patch-size sweep (seed 003): patch 16, 8, 4, 2, 1 at a fixed image size, down to pixel tokens.

  python -m vit_jax.sweep --config=configs/sweeps/patch_size.py --workdir=runs/sweeps/patch_size

`mnist:DIR` is the study on real data: MNIST at 28x28 (DIR = the folder of its four
IDX files), patch 14, 7, 4, 2, 1 (4 ... 784 patch tokens, seed 003's pixel-transformer input
size), a ViT small enough for 785 tokens on a CPU (width 64, depth 2, 2 heads), seeds 0, 1, 2,
and every point at the training FLOPs of patch 4 at 600 steps of 64 images.
`mnist-steps:DIR` is the same study at equal steps instead: 300 steps of 64 images each (warmup
30), the pixel-token budget of the position-embedding study (posemb.py:mnist:DIR), so 784 tokens
stay within CPU hours. Results: docs/results/patch_size_mnist_{flops,steps}/.

The other arguments are the old procedural-shapes study: the image size `16` (default; the
embedded shapes rendered at 16x16, so 1, 4, 16, 64 and 256 patch tokens), `32` (4 ... 1,024
tokens; patch 1 uses the O(N)-memory `chunked` attention; many hours on CPU), `digits` (the real
8x8 digits upsampled to 16x16, the quickstart's data: an easier task, so the differences between
patch sizes show clearly at the same steps) or `smoke` (patches 8 and 2 at 16x16, 20 steps).
Everything but the patch size is fixed: a small ViT (width 96, depth 4, 3 heads), the data, the
steps and the optimizer. With the image size fixed, a smaller patch means more tokens and more
compute per image and, per seed 003, better accuracy.
"""

from vit_jax.config import base_config, model_config
from vit_jax.models.attention import AUTO_CHUNK_MIN_TOKENS
from vit_jax.sweep import sweep_config

# The position embedding pixel tokens need (configs/sweeps/pixel_tokens.py measured why).
MNIST_POSEMB = "sincos2d"

PATCHES = (16, 8, 4, 2, 1)


MNIST_PATCHES = (14, 7, 4, 2, 1)
# Each MNIST study's answer and its limits, ending its results.md (written once its runs were in).
ANSWERS = {
    "steps": dict(
        conclusion="""
At equal steps (300 of 64 images, a third of an epoch) bigger patches still win on MNIST: patch
14 (4 tokens) reaches 90.73 ± 1.40%, patch 7 68.82 ± 3.42%, patch 4 62.19 ± 4.35%, patch 2
68.73 ± 8.05% and pixel tokens 45.00 ± 10.45%, every one separated below patch 14, with 7, 4
and 2 within each other's intervals. Pixel tokens learn (4.5 times chance) but stay the
weakest. So seed 003's gain from smaller patches shows neither per FLOP (the equal-FLOPs study)
nor per step at this budget: with few updates, a 2-layer model classifies a digit more easily
from 4 large patches (little more than a linear map of the pixels) than from 784 pixels it must
first learn to relate by attention; the seed's result comes from long ImageNet training of
larger models, which 2 CPU cores do not reach.""",
        limits="""
One small model (2 layers, width 64, sin-cos positions), one short budget (300 steps, chosen so
that pixel tokens fit in CPU hours: 17 minutes per patch-1 run against 25 seconds for patch 14)
and one dataset; a longer budget could reorder the small patches, which are still improving
here. Pixel tokens vary widely between seeds (32.9 to 51.3%) and patch 2 too (62 to 78%). The
three patch-1 runs are the position-embedding study's patch1,sincos2d runs (the same config,
shared rather than trained twice; a second training of seed 0 reached the same loss, 1.7577, at
step 300). Throughput and wall times were measured with each study pinned to one core beside
the other."""),
    "flops": dict(
        conclusion="""
At equal training compute (the FLOPs of patch 4 at 600 steps of 64 images), bigger patches win
on MNIST, and every step down in patch size is a separated loss: patch 14 (4 tokens) reaches
98.24 ± 0.08%, patch 7 93.75 ± 0.51%, patch 4 81.91 ± 2.60%, patch 2 38.6 ± 10.9% and pixel
tokens, which get 15 steps for that compute, 19.5 ± 3.2% (chance 10%). Seed 003's "smaller
patches are better" is a claim per step (or at scale), not per FLOP: at this budget the cheap
models see 9 to 360 times more images, and that is worth more than finer tokens to a small
model on MNIST.""",
        limits="""
One small model (2 layers, width 64, sin-cos positions), one compute budget (1.35 training
TFLOPs per run) and one dataset; with n = 3 the standard deviations are rough, and patch 2's
spread (32-51%) shows how early in training its 116 steps stop. The equal-steps comparison
(mnist-steps:DIR, 300 steps each), where pixel tokens get as many steps as the others, is a
separate run (docs/results/patch_size_mnist_steps/). Throughput and wall times were measured
while another study shared the 2 cores."""),
}


def get_config(arg: str | None = None):
    arg = arg or "16"
    if arg.startswith("mnist:"):
        return mnist_study(arg.removeprefix("mnist:"))
    if arg.startswith("mnist-steps:"):
        return mnist_study(arg.removeprefix("mnist-steps:"), equal_steps=300)
    if arg not in ("16", "32", "digits", "smoke"):
        raise ValueError(f"unknown argument {arg!r}; valid: 16, 32, digits, smoke, mnist:DIR, "
                         "mnist-steps:DIR")
    size = 16 if arg in ("smoke", "digits") else int(arg)
    c = base_config()
    c.total_steps = 500
    c.batch_size = 128
    c.data.name = "shapes"
    c.data.shapes = dict(image_size=size, num_train=10_000, num_test=2_000, seed=0)
    c.data.pp_train = "decode|flip_lr|value_range(-1,1)|onehot(6)"
    c.data.pp_eval = "decode|value_range(-1,1)|onehot(6)"
    c.model = model_config("Ti/16", image_size=size, width=96, depth=4, num_heads=3,
                           mlp_dim=384)
    c.optim.update(name="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
                   warmup_steps=50, grad_clip_norm=1.0)
    c.eval_every_steps = c.checkpoint_every_steps = 250
    c.log_every_steps = 50
    c.eval_batch_size = 400
    if arg == "digits":  # the quickstart's data and pipelines (random crop as augmentation)
        c.data.name = "digits"
        c.data.pp_train = ("decode|resize(16)|random_crop(16, pad=2)|to_rgb|value_range(-1,1)"
                           "|onehot(10, label_smoothing=0.1)")
        c.data.pp_eval = "decode|resize(16)|to_rgb|value_range(-1,1)|onehot(10)"
        c.eval_batch_size = 304  # the whole 297-image test split in one (padded) batch
    patches = PATCHES
    if arg == "smoke":
        patches = (8, 2)
        c.total_steps, c.optim.warmup_steps = 20, 5
        c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 10

    points = []
    for p in patches:
        point = {"model.patch_size": p}
        if (size // p) ** 2 >= AUTO_CHUNK_MIN_TOKENS:  # pixel tokens: N x N scores are too big
            point["model.attention"] = "chunked"
        points.append(point)
    return sweep_config(
        f"patch_size_{arg}", c, points, x_key="model.patch_size", log_x=True,
        x_label=f"patch size (image {size}x{size})",
        description=(f"Seed 003 at {size}x{size}: only the patch size changes, so smaller patches "
                     "mean more tokens (class token included) and more compute per image."))


def mnist_study(folder: str, equal_steps: int | None = None):
    """At equal training FLOPs (patch 4's at 600 steps), or at `equal_steps` steps each."""
    c = base_config()
    c.seed = 0
    c.batch_size = 64
    c.total_steps = 600
    c.data.name = "mnist"
    c.data.data_dir = folder
    c.data.pp_train = "decode(1)|value_range(-1,1)|onehot(10)"
    c.data.pp_eval = "decode(1)|value_range(-1,1)|onehot(10)"
    c.model = model_config("Ti/16", image_size=28, in_channels=1, width=64, depth=2,
                           num_heads=2, mlp_dim=256, patch_size=4, posemb=MNIST_POSEMB,
                           attention="standard")
    c.optim.update(name="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
                   warmup_steps=60, grad_clip_norm=1.0)
    c.eval_every_steps = c.checkpoint_every_steps = 100_000  # once, at the end
    c.log_every_steps = 50
    c.eval_batch_size = 1000
    points = [{"model.patch_size": p} for p in MNIST_PATCHES]
    budget = {"kind": "flops", "reference": "patch_size=4"}
    if equal_steps:
        c.total_steps, c.optim.warmup_steps = equal_steps, equal_steps // 10
        budget = {"kind": "steps"}
    answer = ANSWERS.get(budget["kind"], {})
    return sweep_config(
        "patch_size_mnist" + ("_steps" if equal_steps else ""), c, points,
        x_key="model.patch_size", log_x=True,
        x_label="patch size (MNIST 28x28)", seeds=[0, 1, 2], budget=budget,
        measure={"throughput_steps": 2, "internals": True}, **answer,
        description=("Seed 003 on real data: MNIST at 28x28, only the patch size changes (4 to "
                     "784 patch tokens + the class token), three seeds per point."))
