"""Writes scikit-learn's digits as an MNIST-like image folder: root/{train,test}/<digit>/*.png.

  python scripts/make_digits_folder.py /tmp/digits28 [--size 28]

Useful to try the image-folder pipeline (and configs/mnist_folder.py) without any download.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from vit_jax.data.digits import digits_arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--size", type=int, default=28)
    args = parser.parse_args()
    for split, (images, labels) in digits_arrays().items():
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = args.root / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.asarray(image, np.uint8).reshape(image.shape[0], image.shape[1])
            big = Image.fromarray(pixels).resize((args.size, args.size), Image.BILINEAR)
            big.save(folder / f"{i:05d}.png")
        print(f"{split}: {len(images)} images -> {args.root / split}")


if __name__ == "__main__":
    main()
