"""Public entry points: train/eval batch iterators and dataset facts, built from a data config.

Batch layout (numpy): "image" float32 (B,H,W,C), "label" int32 (B,), "labels" float32 (B,K)
one-hot (smoothed and/or mixed); eval batches add "mask" bool (False on padding) and "index"
int32 (the example's index in the split, -1 on padding). `batch_size` is per process.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from vit_jax.data import pp as pp_lib
from vit_jax.data.config import DataConfig, resolve
from vit_jax.data.errors import DataError
from vit_jax.data.iterator import BatchIterator
from vit_jax.data.mixup import Mixup
from vit_jax.data.packed import PackedTrainIterator
from vit_jax.data.pipeline import EvalExample, TrainExample, common_shape, probe, without_misfits
from vit_jax.data.sources import load_split

ConfigLike = Mapping[str, Any] | DataConfig


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    num_train: int  # After train_subset and skipped corrupt images.
    num_eval: int
    image_shape: tuple[int, ...]  # (H, W, C) of preprocessed eval images: what the model sees.
    class_names: tuple[str, ...] | None
    num_skipped: int  # Unreadable images dropped by skip_corrupt (train + eval).
    skipped: tuple[str, ...]  # ... and where they are.


def dataset_info(data_config: ConfigLike) -> DatasetInfo:
    """Counts, classes and the preprocessed image shape (prepares embedded data if needed)."""
    cfg = resolve(data_config)
    train, _, _ = _split_and_pp(cfg, cfg.train_split, cfg.pp_train, "pp_train",
                                cfg.train_subset)
    evals, _, shape = _split_and_pp(cfg, cfg.eval_split, cfg.pp_eval, "pp_eval")
    return DatasetInfo(
        name=cfg.name,
        num_classes=train.num_classes,
        num_train=len(train.records),
        num_eval=len(evals.records),
        image_shape=shape,
        class_names=train.class_names,
        num_skipped=len(train.skipped) + len(evals.skipped),
        skipped=train.skipped + evals.skipped,
    )


def build_train_iterator(
    data_config: ConfigLike,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    max_grid: tuple[int, int] | None = None,
) -> BatchIterator | PackedTrainIterator:
    """Endless shuffled, augmented batches of this process's shard of each global batch.

    The global batch is `batch_size * process_count` examples; concatenating all processes'
    batches of a step gives exactly the batch of a single-process run with that batch size.
    Each epoch is reshuffled from `seed`. `get_state()`/`set_state()` resume bit-exactly.
    With `data.packing`: packed batches of `batch_size` sequences (`data.packed`); `max_grid`:
    the largest patch grid the model's learned position table covers.
    """
    cfg = resolve(data_config)
    _check_batching(batch_size, process_index, process_count)
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be an int >= 0, got {seed!r}")
    if cfg.packing:
        return PackedTrainIterator(cfg, batch_size=batch_size, seed=seed,
                                   process_index=process_index, process_count=process_count,
                                   max_grid=max_grid)
    if (cfg.mixup_alpha or cfg.cutmix_alpha) and batch_size % 2:
        raise DataError(
            f"mixup and cutmix mix example pairs and need an even per-process batch_size, got "
            f"{batch_size}"
        )
    split, pp, shape = _split_and_pp(cfg, cfg.train_split, cfg.pp_train, "pp_train",
                                     cfg.train_subset)
    example = TrainExample(split, pp, seed=seed, batch_size=batch_size,
                           process=(process_index, process_count), shape=shape,
                           repeats=cfg.aug_repeats)
    batches = grain.MapDataset.range(sys.maxsize).map(example)
    batches = batches.batch(batch_size, drop_remainder=True)
    if cfg.mixup_alpha or cfg.cutmix_alpha:
        batches = batches.map_with_index(Mixup(cfg.mixup_alpha, seed, cfg.cutmix_alpha))
    fingerprint = dict(
        dataset=split.name,
        num_examples=len(split.records),
        seed=seed,
        global_batch_size=batch_size * process_count,
        aug_repeats=cfg.aug_repeats,
    )
    return BatchIterator(
        batches, workers=cfg.workers, prefetch=cfg.prefetch, num_steps=None, fingerprint=fingerprint
    )


def build_eval_iterator(
    data_config: ConfigLike,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    split: str | None = None,
) -> BatchIterator:
    """One pass over the eval split (or ``split``) in order: every example exactly once across
    processes.

    All batches have the same shape; the last global batch is padded and its padding rows have
    mask False (and index -1). Every process yields `num_steps` batches.
    """
    cfg = resolve(data_config)
    _check_batching(batch_size, process_index, process_count)
    source, pp, shape = _split_and_pp(cfg, split or cfg.eval_split, cfg.pp_eval, "pp_eval")
    global_batch = batch_size * process_count
    num_steps = -(-len(source.records) // global_batch)
    example = EvalExample(source, pp, batch_size=batch_size,
                          process=(process_index, process_count), shape=shape)
    batches = grain.MapDataset.range(num_steps * batch_size).map(example)
    batches = batches.batch(batch_size, drop_remainder=True)
    fingerprint = dict(
        dataset=source.name, num_examples=len(source.records), global_batch_size=global_batch
    )
    return BatchIterator(
        batches,
        workers=cfg.workers,
        prefetch=cfg.prefetch,
        num_steps=num_steps,
        fingerprint=fingerprint,
    )


def first_eval_batch(data_config: ConfigLike, size: int) -> dict:
    """The first ``size`` eval examples after ``pp_eval`` (in process, no workers): what a
    figure or a measurement of a trained model looks at, the same images every time."""
    loader = build_eval_iterator(dataclasses.replace(resolve(data_config), workers=0),
                                 batch_size=size)
    try:
        return {k: np.asarray(v) for k, v in next(loader).items()}
    finally:
        loader.close()


def _split_and_pp(cfg: DataConfig, split_name: str, spec: str, which: str,
                  subset: int | None = None):
    """(the split, its pp, the image shape every example must come out as); with
    ``skip_corrupt``, the examples that do not are left out (and listed as skipped)."""
    split = load_split(cfg, split_name, subset=subset)
    pp = pp_lib.build(spec)
    probe(split, pp, which)
    shape = common_shape(split, pp)
    if cfg.skip_corrupt:
        split = without_misfits(split, pp, shape)
    return split, pp, shape


def _check_batching(batch_size: int, process_index: int, process_count: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size (per process) must be an int >= 1, got {batch_size!r}")
    if not (isinstance(process_count, int) and process_count >= 1):
        raise DataError(f"process_count must be an int >= 1, got {process_count!r}")
    if not (isinstance(process_index, int) and 0 <= process_index < process_count):
        raise DataError(f"process_index must be in [0, {process_count}), got {process_index!r}")
