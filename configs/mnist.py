"""A small ViT for the real MNIST (28x28 grey, 10 classes) from its four IDX files.

  python -m vit_jax.main --config=configs/mnist.py:/path/to/mnist --workdir=runs/mnist

The argument is the folder holding `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz` (compressed or not), as MNIST is
usually downloaded; it is prepared once into the dataset cache (`data.name="mnist"`).
Patch 7 gives 16 tokens (+ the class token); 10 epochs reach 98.5%+ test accuracy (measured
figure and time on 2 CPU cores: README, "Real data: MNIST").
"""

from vit_jax.config import base_config, model_config


def get_config(arg: str | None = None):
    c = base_config()
    c.seed = 0
    c.batch_size = 256
    c.total_steps = 10 * 60_000 // 256  # 10 epochs
    c.data.name = "mnist"
    c.data.data_dir = arg
    c.data.pp_train = "decode(1)|random_crop(28, pad=2)|value_range(-1,1)|onehot(10)"
    c.data.pp_eval = "decode(1)|value_range(-1,1)|onehot(10)"
    c.data.workers = 2
    c.model = model_config("S/7", image_size=28, in_channels=1, width=128, depth=6,
                           num_heads=4, mlp_dim=256)
    c.optim.update(name="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine",
                   warmup_steps=200, grad_clip_norm=1.0)
    c.eval_every_steps = 585
    c.checkpoint_every_steps = 585
    c.log_every_steps = 50
    c.eval_batch_size = 1000
    return c
