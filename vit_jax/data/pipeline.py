"""Per-example work done in grain workers: pick the example, preprocess it, shape the output."""

from __future__ import annotations

import collections
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vit_jax.data.errors import DataError
from vit_jax.data.order import EpochOrder, example_rng, global_position
from vit_jax.data.pp import Preprocess
from vit_jax.data.records import Records, Subset
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
    records: Records, pp: Preprocess, index: int, rng: np.random.Generator | None,
    shape: tuple[int, ...] | None = None,
) -> dict[str, np.ndarray]:
    """The example as the model sees it: float32 image, int32 label, float32 one-hot labels.
    ``shape``: what every image must come out as (batching needs one shape); an image that
    does not is an error naming its file."""
    out = run_pp(records, pp, index, rng)
    if shape is not None and np.shape(out["image"]) != tuple(shape):
        raise DataError(
            f"{records.describe(index)}: preprocessed to shape {np.shape(out['image'])}, but the "
            f"other images come out {tuple(shape)} with {pp.spec!r}; add a resize to the pp "
            "string, or data.skip_corrupt=True to leave such images out")
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


def common_shape(split: Split, pp: Preprocess, samples: int = 9) -> tuple[int, ...]:
    """The image shape most of a few examples spread over the split come out as: the shape
    every example must have to be batched (an odd image that happens to come first must not
    set it). Unreadable examples are left to iteration, which names them."""
    n = len(split.records)
    shapes = []
    for i in np.unique(np.linspace(0, n - 1, min(n, samples)).astype(int)):
        try:
            out = run_pp(split.records, pp, int(i), example_rng(0, 0, int(i)))
        except DataError:
            continue
        shapes.append(tuple(np.shape(out["image"])))
    if not shapes:
        return tuple(np.shape(run_pp(split.records, pp, 0, example_rng(0, 0, 0))["image"]))
    return collections.Counter(shapes).most_common(1)[0][0]


def without_misfits(split: Split, pp: Preprocess, shape: tuple[int, ...]) -> Split:
    """``skip_corrupt``: leaves out the examples that decode but do not come out ``shape``
    (e.g. an image of another size where the pp does not resize), listed as skipped. Scanned
    once per process and pp, before iteration, so batches are the same on every process."""
    key = (split.name, len(split.records), pp.spec, tuple(shape))
    if key not in _MISFITS:
        def fits(i: int) -> bool:
            try:
                out = pp(split.records[i], example_rng(0, 0, i))
                return np.shape(out["image"]) == tuple(shape)
            except Exception:  # noqa: BLE001 -- unreadable counts as not fitting
                return False

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            ok = np.fromiter(pool.map(fits, range(len(split.records))), bool)
        _MISFITS[key] = ok
    ok = _MISFITS[key]
    if ok.all():
        return split
    bad = tuple(split.records.describe(int(i)) for i in np.flatnonzero(~ok))
    return dataclasses.replace(split, records=Subset(split.records, np.flatnonzero(ok)),
                               skipped=split.skipped + bad)


_MISFITS: dict[tuple, np.ndarray] = {}


class TrainExample:
    """grain map: this process's local position -> its example of the shuffled global stream."""

    def __init__(
        self, split: Split, pp: Preprocess, *, seed: int, batch_size: int, process: tuple[int, int],
        shape: tuple[int, ...] | None = None, repeats: int = 1,
    ):
        self.records, self.pp, self.seed, self.shape = split.records, pp, seed, shape
        self.batch_size, (self.process_index, self.process_count) = batch_size, process
        self.order = EpochOrder(len(split.records), seed, repeats=repeats)

    def __call__(self, local_position: int) -> dict[str, Any]:
        position = global_position(
            local_position, self.batch_size, self.process_index, self.process_count
        )
        epoch, index = self.order(position)
        rng = (example_rng(self.seed, epoch, index, self.order.copy(position))
               if self.pp.needs_rng else None)
        return preprocess_example(self.records, self.pp, index, rng, self.shape)


class EvalExample:
    """grain map: local position -> example, or a masked-out copy of one past the split's end."""

    def __init__(self, split: Split, pp: Preprocess, *, batch_size: int, process: tuple[int, int],
                 shape: tuple[int, ...] | None = None):
        self.records, self.pp, self.n, self.shape = split.records, pp, len(split.records), shape
        self.batch_size, (self.process_index, self.process_count) = batch_size, process

    def __call__(self, local_position: int) -> dict[str, Any]:
        position = global_position(
            local_position, self.batch_size, self.process_index, self.process_count
        )
        valid = position < self.n
        index = position if valid else position % self.n
        rng = example_rng(0, 0, index) if self.pp.needs_rng else None
        out = preprocess_example(self.records, self.pp, index, rng, self.shape)
        out["mask"] = np.bool_(valid)
        out["index"] = np.int32(index if valid else -1)
        return out
