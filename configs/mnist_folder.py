"""configs/mnist.py's ViT for an MNIST-sized image folder (28x28 grey, 10 classes).

  python -m vit_jax.main --config=configs/mnist_folder.py:/data/mnist --workdir=runs/mnist

The argument is the folder root holding `train/<class>/*.png` and `test/<class>/*.png`
(`python scripts/make_digits_folder.py DIR` writes such a folder from the embedded digits).
Patch 7 gives 16 tokens, so an epoch of 60,000 images takes about a minute on 2 CPU cores.
"""

from pathlib import Path

from vit_jax.config import load_config_file


def get_config(arg: str | None = None):
    c = load_config_file(Path(__file__).resolve().parent / "mnist.py")
    c.data.name = "folder"
    c.data.root = arg
    c.data.pp_train = "decode(1)|random_crop(28, pad=2)|value_range(-1,1)|onehot(10)"
    c.data.pp_eval = "decode(1)|value_range(-1,1)|onehot(10)"
    c.eval_every_steps = c.checkpoint_every_steps = 500
    return c
