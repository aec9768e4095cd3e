"""`mnist`: the real MNIST from a folder holding its four standard IDX files, as a TFDS builder.

``data.name="mnist"``, ``data.data_dir=<folder>``: the folder holds ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
gzip-compressed (``.gz``, as usually downloaded) or not. Nothing is downloaded: the files are
read once and prepared into array_record files in the embedded datasets' cache
(``$VIT_JAX_DATA_DIR`` or ``~/.cache/vit_jax/tfds``), under a config named by a hash of the
files, so another copy with other contents never reuses them and the source folder may be
read-only. From there it is the same TFDS -> array_record -> grain path as the embedded sets.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data.errors import DataError
from vit_jax.data.png import encode_png
from vit_jax.data.prepare import EmbeddedBuilder, image_label_info

# split -> (images file, labels file), without the optional ".gz"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x803, 0x801  # unsigned bytes, 3 or 1 dimensions


def find_files(folder: str | None) -> dict[str, str]:
    """``{file name: path}`` of the four IDX files in ``folder``; an error lists what is missing."""
    if not folder:
        raise DataError("data.name='mnist' needs data.data_dir=<folder holding the four MNIST "
                        "IDX files (train-images-idx3-ubyte.gz, ...)>")
    if not os.path.isdir(folder):
        raise DataError(f"data.data_dir={folder}: no such directory (for data.name='mnist' it "
                        "holds the four MNIST IDX files)")
    found, missing = {}, []
    for name in (n for pair in FILES.values() for n in pair):
        paths = [os.path.join(folder, name + ext) for ext in ("", ".gz")]
        existing = [p for p in paths if os.path.isfile(p)]
        if existing:
            found[name] = existing[0]
        else:
            missing.append(f"{name}[.gz]")
    if missing:
        raise DataError(f"data.data_dir={folder} lacks the MNIST IDX file(s) "
                        f"{', '.join(missing)} (gzip-compressed or not)")
    return found


def read_idx(path: str, magic: int) -> np.ndarray:
    """A uint8 IDX array (``.gz`` or plain); a file of another kind or size is an error."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path}: {len(data) - header} bytes of data, but its header says "
                        f"{shape} ({int(np.prod(shape))} bytes): the file is truncated or corrupt")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def write_idx(path: str, array: np.ndarray) -> str:
    """Writes a uint8 array in the IDX layout (gzip-compressed if ``path`` ends in .gz): magic
    (0, 0, 0x08 = unsigned byte, ndim), the dimensions big-endian, then the bytes."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                      for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def read_split(files: dict[str, str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,H,W,1), labels uint8 (N,)) of one split, checked to match."""
    images_name, labels_name = FILES[split]
    images = read_idx(files[images_name], _IMAGES_MAGIC)
    labels = read_idx(files[labels_name], _LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{files[images_name]} holds {len(images)} images but "
                        f"{files[labels_name]} {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{files[labels_name]}: label {int(labels.max())} is not a digit 0-9")
    return images[..., None], labels


@dataclasses.dataclass(eq=False)
class MnistConfig(tfds.core.BuilderConfig):
    folder: str = ""

    def __reduce__(self):
        # Unpickle (e.g. in grain workers) to the canonical instance: TFDS compares identity.
        return _config, (self.name, self.folder)


def mnist_config(folder: str | None) -> MnistConfig:
    """The builder config for the IDX files in ``folder``, named by a hash of their bytes."""
    files = find_files(folder)
    stamp = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in sorted(files.values()))
    return _config(_files_hash(stamp), os.path.abspath(folder))


@functools.cache
def _files_hash(stamp: tuple) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamp:
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return "idx_" + digest.hexdigest()[:16]


@functools.cache
def _config(name: str, folder: str) -> MnistConfig:
    config = MnistConfig(name=name, folder=folder, description=f"MNIST IDX files in {folder}.")
    _BY_NAME[name] = config
    return config


_BY_NAME: dict[str, MnistConfig] = {}


class MnistIdx(EmbeddedBuilder):
    """MNIST from local IDX files; registered with TFDS as `mnist_idx` (TFDS's own `mnist`
    downloads)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The four IDX files as 28x28x1 PNG, splits train/test."}

    @classmethod
    def get_builder_config(cls, name, version=None):
        """Every folder's config is known to TFDS (not a "custom data configuration")."""
        return _BY_NAME.get(name)

    def _info(self) -> tfds.core.DatasetInfo:
        return image_label_info(
            self, "MNIST handwritten digits (LeCun, Cortes, Burges; CC BY-SA 3.0).",
            (28, 28, 1), [str(d) for d in range(10)],
            disable_shuffling=True)  # the files' order: train_subset=N is MNIST's first N

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        files = find_files(self.builder_config.folder)
        return {split: self._generate_examples(files, split) for split in FILES}

    def _generate_examples(self, files: dict[str, str], split: str):
        images, labels = read_split(files, split)
        if images.shape[1:3] != (28, 28):
            raise DataError(f"{files[FILES[split][0]]}: images are {images.shape[1:3]}, "
                            "MNIST's are 28x28")
        for i in range(len(images)):
            yield i, {"image": encode_png(images[i]), "label": int(labels[i])}
