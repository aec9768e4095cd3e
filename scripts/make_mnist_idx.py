"""Writes scikit-learn's digits, upsampled to 28x28, as MNIST's four gzip-compressed IDX files.

  python scripts/make_mnist_idx.py data/mnist

A stand-in to try `data.name="mnist"` (configs/mnist.py) without MNIST itself: 1,500 training
and 297 test images in the same file format and layout. Point the config at a real MNIST folder
for real results. Refuses to overwrite a folder that already holds MNIST files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vit_jax.data.digits import digits_arrays
from vit_jax.data.mnist import FILES, write_idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    existing = sorted(p.name for p in args.folder.glob("*-idx?-ubyte*"))
    if existing:
        sys.exit(f"{args.folder} already holds {', '.join(existing)}; not overwriting")
    args.folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in digits_arrays().items():
        big = np.stack([np.asarray(Image.fromarray(image[..., 0]).resize((28, 28),
                                                                         Image.BILINEAR))
                        for image in images])
        images_name, labels_name = FILES[split]
        write_idx(str(args.folder / f"{images_name}.gz"), big)
        write_idx(str(args.folder / f"{labels_name}.gz"), np.asarray(labels, np.uint8))
        print(f"{split}: {len(big)} images -> {args.folder}/{images_name}.gz")


if __name__ == "__main__":
    main()
