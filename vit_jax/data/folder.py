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


# (split dir, classes, each class dir's mtime) -> (paths, labels): a run opens a split several
# times (validation, training, each evaluator); ImageNet's 1.28M files are listed once. Adding or
# removing a file changes its class directory's mtime, so a changed folder is listed again.
_LISTINGS: dict[tuple, tuple[list[str], np.ndarray]] = {}
MAX_LISTINGS = 4


def _listing(root: str, split: str, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """The split's image paths and labels, in the fixed pseudo-random order."""
    split_dir = os.path.join(root, split)
    found = list_classes(root, split)
    key = (split_dir, classes, tuple(os.stat(os.path.join(split_dir, c)).st_mtime_ns
                                     for c in found))
    if key in _LISTINGS:
        return _LISTINGS[key]
    label_of = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for cls in found:
        if cls not in label_of:
            raise DataError(f"class {cls!r} of {split_dir!r} is not a class of the training "
                            f"split; classes: {list(classes)}")
        class_dir = os.path.join(split_dir, cls)
        names = sorted(n for n in os.listdir(class_dir) if n.lower().endswith(EXTENSIONS))
        paths += [os.path.join(class_dir, n) for n in names]
        labels += [label_of[cls]] * len(names)
    if not paths:
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {split_dir!r}")
    order = np.random.default_rng(_ORDER_SEED).permutation(len(paths))
    while len(_LISTINGS) >= MAX_LISTINGS:  # the oldest goes (dicts keep insertion order)
        _LISTINGS.pop(next(iter(_LISTINGS)))
    _LISTINGS[key] = ([paths[i] for i in order], np.asarray(labels, np.int64)[order])
    return _LISTINGS[key]


class FolderRecords:
    """The images of one split. Labels come from `classes` (the train split's class list).

    Files are kept in a fixed pseudo-random order (a seeded permutation of the sorted listing),
    like TFDS's shuffled shards, so a first-N `train_subset` spans all classes.
    """

    def __init__(self, root: str, split: str, classes: list[str]):
        self.root, self.split, self.classes = root, split, classes
        self.paths, self.labels = _listing(root, split, tuple(classes))

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
