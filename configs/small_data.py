"""Seed 004's small-data protocol: a ViT-Tiny on a 5,000-image training subset, 30 epochs.

  python -m vit_jax.main --config=configs/small_data.py:vit --workdir=runs/small_data_vit
  python -m vit_jax.main --config=configs/small_data.py:SimpleCNN --workdir=runs/small_data_cnn

The argument picks the model: `vit` (seed 004's ViT-Tiny: width 128, depth 6, 4 heads, patch 4,
1.2M parameters), `SimpleCNN` or `SmallResNet`. The data is the embedded procedural `shapes` set
at 32x32 (CIFAR-10 cannot be downloaded here), or with `MODEL,mnist:DIR` the first 5,000 images
of the real MNIST at 28x28 (DIR: the folder of its IDX files; no flips for digits). Protocol:
AdamW lr 1e-3, wd 0.01, linear warmup (5 epochs for the ViT, 3 for CNNs) + cosine, label
smoothing 0.1, batch 128, 30 epochs.
"""

from vit_jax.config import base_config, model_config

TRAIN_IMAGES = 5_000
BATCH = 128


def get_config(arg: str | None = None):
    arch, _, dataset = (arg or "vit").partition(",")
    c = base_config()
    steps_per_epoch = TRAIN_IMAGES // BATCH
    c.batch_size = BATCH
    c.total_steps = 30 * steps_per_epoch
    c.data.name = "shapes"
    c.data.shapes = dict(image_size=32, num_train=10_000, num_test=1_000, seed=0)
    c.data.train_subset = TRAIN_IMAGES
    c.data.pp_train = "decode|flip_lr|value_range(-1,1)|onehot(6, label_smoothing=0.1)"
    c.data.pp_eval = "decode|value_range(-1,1)|onehot(6)"
    size, channels = 32, 3
    if dataset.startswith("mnist:"):
        size, channels = 28, 1
        c.data.name, c.data.data_dir = "mnist", dataset.removeprefix("mnist:")
        c.data.pp_train = "decode(1)|value_range(-1,1)|onehot(10, label_smoothing=0.1)"
        c.data.pp_eval = "decode(1)|value_range(-1,1)|onehot(10)"
    elif dataset:
        raise ValueError(f"unknown dataset {dataset!r} in {arg!r}; valid: MODEL or "
                         "MODEL,mnist:DIR")
    if arch == "vit":
        c.model = model_config("Ti/4", image_size=size, in_channels=channels, width=128,
                               depth=6, num_heads=4, mlp_dim=512)
        warmup_epochs = 5
    elif arch in ("SimpleCNN", "SmallResNet"):
        c.model = model_config(arch, in_channels=channels)
        warmup_epochs = 3
    else:
        raise ValueError(f"unknown model {arch!r}; valid: vit, SimpleCNN, SmallResNet")
    c.optim.update(name="adamw", lr=1e-3, weight_decay=0.01, schedule="cosine",
                   warmup_steps=warmup_epochs * steps_per_epoch)
    c.eval_every_steps = steps_per_epoch * 5
    c.checkpoint_every_steps = steps_per_epoch * 5
    c.log_every_steps = steps_per_epoch
    c.eval_batch_size = 200
    return c
