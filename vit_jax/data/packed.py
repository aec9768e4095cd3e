"""Packed training batches (NaViT, "Patch n' Pack"): each image at its own size, packed online.

``data.packing = dict(seq_len=L, max_images=K, patch_size=p, token_drop=0.0, lookahead=None)``
turns the train iterator into one of packed batches (``vit_jax.packing``'s layout: ``patches``
(B, L, p·p·C), ``segment_ids``, ``positions``, ``grids``, ``image_mask`` (B, K), ``labels``
(B, K, classes))
with B = the per-process batch size in *sequences*. The train pp gives each image its own size
(e.g. ``decode|resize_native(16, 48, multiple=8)|value_range(-1,1)|onehot(10)``: the longer side
drawn per image, aspect ratio kept, whole patches); ``token_drop=r`` keeps a random subset of
each image's patches, the rate drawn per image uniformly in [0, r] (NaViT's token dropping).

Online bin-packing: each batch first tries the images left over from earlier batches (oldest
first), then draws new ones from the shuffled stream, placing each in the first sequence with
room for its tokens and a free slot; an image that fits nowhere waits for the next batch. The
batch is done when every sequence is full or ``lookahead`` images (default 2·K) are waiting.
Since waiting images come first, the oldest always lands in the next batch's first sequence:
none waits forever, none is split across sequences, none is lost, and each epoch's examples are
each drawn once. The state is the next stream position and the waiting positions (examples are
re-made from their positions, augmentation included), so a restored iterator continues
bit-exactly. Each process draws every P-th example of the global stream (its own shard).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax.checks import is_int, is_number
from vit_jax.data import pp as pp_lib
from vit_jax.data.errors import DataError
from vit_jax.data.order import EpochOrder, example_rng
from vit_jax.data.pipeline import preprocess_example, probe
from vit_jax.data.sources import load_split
from vit_jax.packing import empty_batch, image_tokens

KEYS = ("seq_len", "max_images", "patch_size", "token_drop", "lookahead")
_DROP_STREAM = 2  # the example rng's stream for token dropping (pp: 0, mixup: 1)


def resolve_packing(packing: Mapping[str, Any]) -> dict[str, Any]:
    """``data.packing`` validated, with its defaults; one-line errors naming the key."""
    packing = dict(packing)
    unknown = sorted(set(packing) - set(KEYS))
    if unknown:
        raise DataError(f"data.packing: unknown keys {unknown}; valid: {', '.join(KEYS)}")
    for key in ("seq_len", "max_images", "patch_size"):
        if not (is_int(packing.get(key)) and packing[key] >= 1):
            raise DataError(f"data.packing.{key}={packing.get(key)!r} must be an integer >= 1")
    drop = packing.setdefault("token_drop", 0.0)
    if not (is_number(drop) and 0 <= drop < 1):
        raise DataError(f"data.packing.token_drop={drop!r} must be in [0, 1) (the largest "
                        "fraction of an image's patches dropped)")
    if packing.get("lookahead") is None:
        packing["lookahead"] = 2 * packing["max_images"]
    if not (is_int(packing["lookahead"]) and packing["lookahead"] >= 1):
        raise DataError(f"data.packing.lookahead={packing['lookahead']!r} must be an integer "
                        ">= 1 (images that may wait for a later batch)")
    return packing


class PackedTrainIterator:
    """Endless packed batches of this process's shard; ``get_state``/``set_state`` resume."""

    def __init__(self, cfg: Any, *, batch_size: int, seed: int, process_index: int = 0,
                 process_count: int = 1, max_grid: tuple[int, int] | None = None):
        p = resolve_packing(cfg.packing)
        self.seq_len, self.max_images, self.patch = p["seq_len"], p["max_images"], p["patch_size"]
        self.token_drop, self.lookahead = float(p["token_drop"]), p["lookahead"]
        self.batch_size, self.seed, self.max_grid = batch_size, seed, max_grid
        self.process = (process_index, process_count)
        self.split = load_split(cfg, cfg.train_split, subset=cfg.train_subset)
        self.pp = pp_lib.build(cfg.pp_train)
        probe(self.split, self.pp, "pp_train")
        self.order = EpochOrder(len(self.split.records), seed)
        self.num_classes = self.split.num_classes
        self._next, self._waiting = 0, []
        self._made: dict[int, tuple] = {}  # made examples of waiting positions

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        return {"packed_next": self._next, "packed_waiting": list(self._waiting)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        if "packed_next" not in state:
            raise DataError("the checkpoint's data state is not a packed iterator's (was the "
                            "run started without data.packing?)")
        self._next, self._waiting = int(state["packed_next"]), list(state["packed_waiting"])
        self._made = {}

    def close(self) -> None:
        self._made = {}

    def __iter__(self):
        return self

    # ------------------------------------------------------------------ examples

    def tokens(self, local: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """(patches (n, p·p·C), positions (n, 2), one-hot labels, its whole patch grid) of
        this process's ``local``-th example of the stream, after its pp and token dropping."""
        if local in self._made:
            return self._made[local]
        position = local * self.process[1] + self.process[0]
        epoch, index = self.order(position)
        example = preprocess_example(self.split.records, self.pp, index,
                                     example_rng(self.seed, epoch, index))
        image = example["image"]
        h, w, _ = image.shape
        p = self.patch
        if h % p or w % p:
            raise DataError(f"{self.split.records.describe(index)}: {h}x{w} after pp_train "
                            f"does not cut into {p}x{p} patches; use resize_native(..., "
                            f"multiple={p}) in data.pp_train")
        gh, gw = h // p, w // p
        if gh * gw > self.seq_len:
            raise DataError(f"an image of {gh}x{gw} patches does not fit "
                            f"data.packing.seq_len={self.seq_len}; lower resize_native's "
                            "side_max or raise seq_len")
        if self.max_grid is not None and (gh > self.max_grid[0] or gw > self.max_grid[1]):
            raise DataError(f"an image of {gh}x{gw} patches is beyond the model's "
                            f"{self.max_grid[0]}x{self.max_grid[1]} position table; lower "
                            "resize_native's side_max or raise model.image_size")
        patches, positions = image_tokens(image, (p, p))
        if self.token_drop:
            rng = np.random.default_rng([self.seed, _DROP_STREAM, epoch, index])
            keep = max(1, round(gh * gw * (1 - rng.uniform(0, self.token_drop))))
            kept = np.sort(rng.choice(gh * gw, keep, replace=False))
            patches, positions = patches[kept], positions[kept]
        return patches, positions, example["labels"], (gh, gw)

    # ------------------------------------------------------------------ packing

    def __next__(self) -> dict[str, np.ndarray]:
        b, length, k = self.batch_size, self.seq_len, self.max_images
        used, slots = [0] * b, [0] * b
        placed: list[tuple[int, int, int]] = []  # (local position, sequence, slot)
        waiting, candidates = [], list(self._waiting)
        made: dict[int, tuple] = {}
        while not all(slots[s] == k or used[s] == length for s in range(b)):
            if candidates:
                local = candidates.pop(0)
            elif len(waiting) < self.lookahead:
                local, self._next = self._next, self._next + 1
            else:
                break
            made[local] = self.tokens(local)
            n = len(made[local][0])
            seq = next((s for s in range(b) if used[s] + n <= length and slots[s] < k), None)
            if seq is None:
                waiting.append(local)
                continue
            placed.append((local, seq, slots[seq]))
            used[seq] += n
            slots[seq] += 1
        self._waiting = waiting + candidates  # untried waiting images keep their turn
        known = {**self._made, **made}  # what this batch made, and what waits from before
        self._made = {local: known[local] for local in self._waiting if local in known}
        return self._assemble(placed, made)

    def _assemble(self, placed: list[tuple[int, int, int]], made: dict) -> dict[str, np.ndarray]:
        b, length, k = self.batch_size, self.seq_len, self.max_images
        dim = 3 * self.patch * self.patch
        if placed:
            dim = made[placed[0][0]][0].shape[1]
        batch = empty_batch(b, length, k, dim, self.num_classes)
        fill = [0] * b
        for local, seq, slot in placed:
            patches, positions, labels, grid = made[local]
            n, start = len(patches), fill[seq]
            batch["patches"][seq, start:start + n] = patches
            batch["segment_ids"][seq, start:start + n] = slot + 1
            batch["positions"][seq, start:start + n] = positions
            batch["grids"][seq, start:start + n] = grid
            batch["image_mask"][seq, slot] = True
            batch["labels"][seq, slot] = labels
            fill[seq] += n
        batch["position"] = np.full((b, k), -1, np.int32)  # which stream example each slot is
        for local, seq, slot in placed:
            batch["position"][seq, slot] = local * self.process[1] + self.process[0]
        return batch
