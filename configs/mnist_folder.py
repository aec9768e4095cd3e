"""A small ViT for an MNIST-sized image folder (28x28 grey, 10 classes).

  python -m vit_jax.main --config=configs/mnist_folder.py:/data/mnist --workdir=runs/mnist

The argument is the folder root holding `train/<class>/*.png` and `test/<class>/*.png`
(`python scripts/make_digits_folder.py DIR` writes such a folder from the embedded digits).
Patch 7 gives 16 tokens, so an epoch of 60,000 images takes about a minute on 2 CPU cores.
"""

from vit_jax.config import base_config, model_config


def get_config(arg: str | None = None):
    c = base_config()
    c.batch_size = 256
    c.total_steps = 10 * 60_000 // 256  # 10 epochs
    c.data.name = "folder"
    c.data.root = arg
    c.data.pp_train = "decode(1)|random_crop(28, pad=2)|value_range(-1,1)|onehot(10)"
    c.data.pp_eval = "decode(1)|value_range(-1,1)|onehot(10)"
    c.data.workers = 2
    c.model = model_config("S/7", image_size=28, in_channels=1, width=128, depth=6,
                           num_heads=4, mlp_dim=256)
    c.optim.update(name="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine",
                   warmup_steps=200, grad_clip_norm=1.0)
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.log_every_steps = 50
    c.eval_batch_size = 1000
    return c
