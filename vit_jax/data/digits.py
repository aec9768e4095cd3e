"""`digits`: scikit-learn's 1,797 real 8x8 handwritten digits as a TFDS builder (no download).

Pixel values 0..16 are rescaled to uint8 0..255 and stored as 1-channel PNG; resizing to the
model's resolution is left to preprocessing. The split is stratified and seeded so every machine
prepares the same 1,500 train / 297 test examples.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data.png import encode_png
from vit_jax.data.prepare import EmbeddedBuilder, image_label_info

NUM_TEST = 297
SPLIT_SEED = 0


def digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{"train": (images uint8 (1500,8,8,1), labels), "test": (... 297 ...)}`."""
    # Imported here: scikit-learn takes ~2 s to import and is only needed to prepare once.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target, test_size=NUM_TEST, stratify=data.target, random_state=SPLIT_SEED
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


class Digits(EmbeddedBuilder):
    """scikit-learn's 8x8 digits; registered with TFDS as `digits`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "sklearn load_digits, stratified 1500/297 split (seed 0)."}

    def _info(self) -> tfds.core.DatasetInfo:
        return image_label_info(
            self, "scikit-learn's UCI ML hand-written digits, 8x8 grey, 10 classes.",
            (8, 8, 1), [str(d) for d in range(10)])

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        arrays = digits_arrays()
        return {name: self._generate_examples(*xy) for name, xy in arrays.items()}

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": encode_png(image), "label": int(label)}
