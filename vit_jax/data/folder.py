"""Image-folder datasets: `root/<split>/<class>/<image>`, classes sorted by name -> label."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vit_jax.data.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_ORDER_SEED = 0


def list_classes(root: str, split: str) -> list[str]:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        raise DataError(f"image folder split {split_dir!r} does not exist; splits found: {found}")
    classes = sorted(d.name for d in os.scandir(split_dir) if d.is_dir())
    if not classes:
        raise DataError(f"image folder {split_dir!r} has no class subdirectories")
    return classes


class FolderRecords:
    """The images of one split. Labels come from `classes` (the train split's class list).

    Files are kept in a fixed pseudo-random order (a seeded permutation of the sorted listing),
    like TFDS's shuffled shards, so a first-N `train_subset` spans all classes.
    """

    def __init__(self, root: str, split: str, classes: list[str]):
        self.root, self.split, self.classes = root, split, classes
        paths, labels = [], []
        for cls in list_classes(root, split):
            if cls not in classes:
                raise DataError(
                    f"class {cls!r} of {os.path.join(root, split)!r} is not a class of the "
                    f"training split; classes: {classes}"
                )
            class_dir = os.path.join(root, split, cls)
            for name in sorted(os.listdir(class_dir)):
                if name.lower().endswith(EXTENSIONS):
                    paths.append(os.path.join(class_dir, name))
                    labels.append(classes.index(cls))
        if not paths:
            raise DataError(
                f"no images ({', '.join(EXTENSIONS)}) under {os.path.join(root, split)!r}"
            )
        order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
        self.paths = [paths[i] for i in order]
        self.labels = np.asarray(labels, np.int64)[order]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            with open(self.paths[index], "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"cannot read image {self.paths[index]}: {e}") from e
        return {"image": data, "label": int(self.labels[index])}

    def describe(self, index: int) -> str:
        return self.paths[index]

    def signature(self) -> tuple:
        """Identifies the files' current contents, for caching a corrupt-file scan."""
        stats = [os.stat(p) for p in self.paths]
        return tuple((p, s.st_size, s.st_mtime_ns) for p, s in zip(self.paths, stats, strict=True))
