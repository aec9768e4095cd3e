"""Per-example work done in grain workers: pick the example, preprocess it, shape the output."""

from __future__ import annotations

from typing import Any

import numpy as np

from vit_jax.data.errors import DataError
from vit_jax.data.order import EpochOrder, example_rng, global_position
from vit_jax.data.pp import Preprocess
from vit_jax.data.records import Records
from vit_jax.data.sources import Split


def run_pp(
    records: Records, pp: Preprocess, index: int, rng: np.random.Generator | None
) -> dict[str, Any]:
    """Reads and preprocesses example `index`; any failure names the example (file) at fault."""
    try:
        return pp(records[index], rng)
    except DataError as e:
        where = records.describe(index)
        raise DataError(str(e) if where in str(e) else f"{where}: {e}") from e


def preprocess_example(
    records: Records, pp: Preprocess, index: int, rng: np.random.Generator | None
) -> dict[str, np.ndarray]:
    """The example as the model sees it: float32 image, int32 label, float32 one-hot labels."""
    out = run_pp(records, pp, index, rng)
    return {
        "image": np.asarray(out["image"], np.float32),
        "label": np.int32(out["label"]),
        "labels": np.asarray(out["labels"], np.float32),
    }


def probe(split: Split, pp: Preprocess, which: str) -> dict[str, Any]:
    """Preprocesses example 0 to check, before any worker starts, that the pp string fits."""
    out = run_pp(split.records, pp, 0, example_rng(0, 0, 0))
    if "labels" not in out:
        raise DataError(
            f"{which} {pp.spec!r} must produce one-hot 'labels': end it with "
            f"'|onehot({split.num_classes})' ({split.name} has {split.num_classes} classes)"
        )
    image, labels = np.asarray(out["image"]), np.asarray(out["labels"])
    if labels.shape != (split.num_classes,):
        raise DataError(
            f"{which} {pp.spec!r} gives labels of shape {labels.shape}, but {split.name} has "
            f"{split.num_classes} classes: use onehot({split.num_classes})"
        )
    if image.ndim != 3:
        raise DataError(f"{which} {pp.spec!r} gives images of shape {image.shape}, not (H,W,C)")
    return out


class TrainExample:
    """grain map: this process's local position -> its example of the shuffled global stream."""

    def __init__(
        self, split: Split, pp: Preprocess, *, seed: int, batch_size: int, process: tuple[int, int]
    ):
        self.records, self.pp, self.seed = split.records, pp, seed
        self.batch_size, (self.process_index, self.process_count) = batch_size, process
        self.order = EpochOrder(len(split.records), seed)

    def __call__(self, local_position: int) -> dict[str, Any]:
        position = global_position(
            local_position, self.batch_size, self.process_index, self.process_count
        )
        epoch, index = self.order(position)
        rng = example_rng(self.seed, epoch, index) if self.pp.needs_rng else None
        return preprocess_example(self.records, self.pp, index, rng)


class EvalExample:
    """grain map: local position -> example, or a masked-out copy of one past the split's end."""

    def __init__(self, split: Split, pp: Preprocess, *, batch_size: int, process: tuple[int, int]):
        self.records, self.pp, self.n = split.records, pp, len(split.records)
        self.batch_size, (self.process_index, self.process_count) = batch_size, process

    def __call__(self, local_position: int) -> dict[str, Any]:
        position = global_position(
            local_position, self.batch_size, self.process_index, self.process_count
        )
        valid = position < self.n
        index = position if valid else position % self.n
        rng = example_rng(0, 0, index) if self.pp.needs_rng else None
        out = preprocess_example(self.records, self.pp, index, rng)
        out["mask"] = np.bool_(valid)
        out["index"] = np.int32(index if valid else -1)
        return out
