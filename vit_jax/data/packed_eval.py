"""Packed evaluation batches: every eval image at its own size, ``max_images`` per sequence.

The eval pp gives each image its own shape within a token budget (``resize_tokens(N, p)``:
aspect ratio kept, at most N patches), so sequences of ``max_images * N`` tokens always hold
``max_images`` images and a batch of B sequences holds B·K images, in split order: the number
of batches is known from the split's size alone, the same on every process (each packs every
P-th image), and no image is split or left out. The layout is ``vit_jax.packing``'s, plus
``index`` (B, K) (the example's index in the split, -1 for an empty slot).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from vit_jax.data import pp as pp_lib
from vit_jax.data.config import resolve
from vit_jax.data.errors import DataError
from vit_jax.data.order import example_rng
from vit_jax.data.pipeline import preprocess_example, probe
from vit_jax.data.sources import load_split
from vit_jax.packing import empty_batch, pack_images


class PackedEvalBatches:
    """One pass over this process's share of the eval split, as packed batches of
    ``batch_size`` sequences (per process) of ``max_images`` images of at most ``max_tokens``
    patches each."""

    def __init__(self, data_config: Any, *, pp: str, patch_size: int, max_tokens: int,
                 max_images: int, batch_size: int, split: str | None = None,
                 process_index: int = 0, process_count: int = 1,
                 max_grid: tuple[int, int] | None = None):
        cfg = resolve(data_config)
        self.split = load_split(cfg, split or cfg.eval_split)
        self.pp = pp_lib.build(pp)
        first = probe(self.split, self.pp, "the packed eval's pp")
        self.patch_dim = patch_size * patch_size * int(np.shape(first["image"])[-1])
        self.patch, self.max_tokens, self.max_images = patch_size, max_tokens, max_images
        self.batch_size, self.max_grid = batch_size, max_grid
        self.process = (process_index, process_count)
        per_step = batch_size * max_images * process_count  # images per global step
        self.num_steps = -(-len(self.split.records) // per_step)

    @property
    def seq_len(self) -> int:
        return self.max_images * self.max_tokens

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for step in range(self.num_steps):
            yield self.batch(step)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's packed batch ``step``: global images [step·B·K·P, ...), every P-th."""
        p_index, p_count = self.process
        per_process = self.batch_size * self.max_images
        first = step * per_process * p_count
        indices = [i for i in range(first + p_index, first + per_process * p_count, p_count)
                   if i < len(self.split.records)]
        if not indices:  # this process's share has ended: an all-padding batch keeps it in step
            return self.empty()
        examples = [self.example(i) for i in indices]
        batch, placement = pack_images(
            [e["image"] for e in examples], patch_size=self.patch, seq_len=self.seq_len,
            max_images=self.max_images, labels=[e["labels"] for e in examples],
            max_grid=self.max_grid, num_sequences=self.batch_size)
        batch["index"] = np.full(batch["image_mask"].shape, -1, np.int32)
        for i, (seq, slot) in zip(indices, placement, strict=True):
            batch["index"][seq, slot] = i
        return batch

    def empty(self) -> dict[str, np.ndarray]:
        batch = empty_batch(self.batch_size, self.seq_len, self.max_images, self.patch_dim,
                            self.split.num_classes)
        batch["index"] = np.full(batch["image_mask"].shape, -1, np.int32)
        return batch

    def example(self, index: int) -> dict[str, np.ndarray]:
        rng = example_rng(0, 0, index) if self.pp.needs_rng else None
        out = preprocess_example(self.split.records, self.pp, index, rng)
        h, w = out["image"].shape[:2]
        if h % self.patch or w % self.patch or (h // self.patch) * (w // self.patch) > \
                self.max_tokens:
            raise DataError(
                f"{self.split.records.describe(index)}: {h}x{w} after {self.pp.spec!r} is not "
                f"at most {self.max_tokens} whole {self.patch}x{self.patch} patches; give each "
                f"image its size with resize_tokens({self.max_tokens}, {self.patch})")
        return out
