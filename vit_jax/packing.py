"""NaViT's "Patch n' Pack": images of any size cut into patches and packed into sequences.

``pack_images`` is the host side (numpy): each image becomes its own run of patch tokens in one
sequence of ``seq_len`` tokens, with at most ``max_images`` images per sequence; the model
(``VisionTransformer`` called on the returned dict) keeps every token's attention inside its
own image by the segment ids and pools per image. An image is never split across sequences and
never dropped: one that cannot fit any sequence is an error, before any work.

The packed batch (B sequences, L = ``seq_len``, K = ``max_images``):

- ``patches`` (B, L, ph·pw·C) float32: each image's patches in row-major grid order, each patch
  flattened in (row, column, channel) order (``models.patch_embed.patchify``'s), zeros for padding;
- ``segment_ids`` (B, L) int32: 1..K for the image slot a token belongs to, 0 for padding;
- ``positions`` (B, L, 2) int32: (row, column) of each token in its own image's patch grid;
- ``grids`` (B, L, 2) int32: (rows, columns) of that grid (0 for padding): what fractional
  position embeddings scale by (token dropping keeps the whole image's grid);
- ``image_mask`` (B, K) bool: which slots hold an image;
- ``labels`` (B, K, ...) when ``labels`` are given (zeros in empty slots).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KEYS = ("patches", "segment_ids", "positions", "image_mask")  # what makes a batch packed
MODEL_KEYS = (*KEYS, "grids")  # what the model reads of it


def pack_images(images: Sequence[np.ndarray], *, patch_size: int | tuple[int, int],
                seq_len: int, max_images: int, labels: Sequence | None = None,
                max_grid: tuple[int, int] | None = None,
                num_sequences: int | None = None) -> tuple[dict, list[tuple[int, int]]]:
    """Packs (H, W, C) images (sizes divisible by the patch) into sequences, first fit in the
    given order (deterministic; callers shuffle beforehand).

    Returns ``(batch, placement)``: the packed batch (module docstring) and, per input image,
    ``(sequence, slot)`` with slot 0-based (its segment id is ``slot + 1``). ``max_grid``:
    the largest (rows, columns) grid the model's position table covers (a learned table);
    an image beyond it is an error. ``num_sequences``: a fixed batch size (one compiled shape
    for every step), padded with empty sequences; needing more is an error.
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    for name, value in (("seq_len", seq_len), ("max_images", max_images), ("patch", ph),
                        ("patch", pw)):
        if not (isinstance(value, int | np.integer) and value >= 1):
            raise ValueError(f"pack_images: {name} must be a positive int, got {value!r}")
    if not len(images):
        raise ValueError("pack_images: no images")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"pack_images: {len(labels)} labels for {len(images)} images")
    arrays = [np.asarray(im) for im in images]
    channels = {a.shape[-1] if a.ndim == 3 else None for a in arrays}
    if None in channels or len(channels) != 1:
        raise ValueError("pack_images: images must all be (H, W, C) with the same C, got shapes "
                         f"{sorted({a.shape for a in arrays})}")
    grids = []
    for i, a in enumerate(arrays):
        h, w = a.shape[:2]
        if h % ph or w % pw or not h or not w:
            raise ValueError(f"pack_images: image {i} is {h}x{w}, not a multiple of the "
                             f"{ph}x{pw} patch; resize it first")
        grid = (h // ph, w // pw)
        if grid[0] * grid[1] > seq_len:
            raise ValueError(f"pack_images: image {i} has {grid[0] * grid[1]} patches, more "
                             f"than seq_len={seq_len}; resize it or raise seq_len")
        if max_grid is not None and (grid[0] > max_grid[0] or grid[1] > max_grid[1]):
            raise ValueError(f"pack_images: image {i}'s {grid[0]}x{grid[1]} patch grid is "
                             f"beyond the model's position table ({max_grid[0]}x{max_grid[1]})")
        grids.append(grid)

    # First fit: each image goes to the first sequence with room (tokens and slots).
    used: list[int] = []
    slots: list[int] = []
    placement = []
    for gh, gw in grids:
        n = gh * gw
        seq = next((s for s in range(len(used))
                    if used[s] + n <= seq_len and slots[s] < max_images), None)
        if seq is None:
            seq = len(used)
            used.append(0)
            slots.append(0)
        placement.append((seq, slots[seq]))
        used[seq] += n
        slots[seq] += 1

    if num_sequences is not None and len(used) > num_sequences:
        raise ValueError(f"pack_images: these {len(arrays)} images need {len(used)} sequences "
                         f"of {seq_len} tokens, more than num_sequences={num_sequences}; pack "
                         "fewer images per batch or raise seq_len")
    b, c = max(len(used), num_sequences or 0), channels.pop()
    batch = empty_batch(b, seq_len, max_images, ph * pw * c)
    fill = [0] * b
    for a, (gh, gw), (seq, slot) in zip(arrays, grids, placement, strict=True):
        n = gh * gw
        start = fill[seq]
        patches, positions = image_tokens(a, (ph, pw))
        batch["patches"][seq, start:start + n] = patches
        batch["segment_ids"][seq, start:start + n] = slot + 1
        batch["positions"][seq, start:start + n] = positions
        batch["grids"][seq, start:start + n] = (gh, gw)
        batch["image_mask"][seq, slot] = True
        fill[seq] += n
    if labels is not None:
        first = np.asarray(labels[0])
        batch["labels"] = np.zeros((b, max_images) + first.shape, first.dtype)
        for label, (seq, slot) in zip(labels, placement, strict=True):
            batch["labels"][seq, slot] = label
    return batch, placement


def layout(num_sequences: int, seq_len: int, max_images: int, patch_dim: int,
           num_classes: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The packed batch's arrays, name -> (shape, dtype): the one definition every producer
    (``pack_images``, the packed train and eval iterators) and the planner build from;
    ``labels`` (one-hot) when ``num_classes`` is given."""
    b, length, k = num_sequences, seq_len, max_images
    out = {"patches": ((b, length, patch_dim), np.dtype(np.float32)),
           "segment_ids": ((b, length), np.dtype(np.int32)),
           "positions": ((b, length, 2), np.dtype(np.int32)),
           "grids": ((b, length, 2), np.dtype(np.int32)),
           "image_mask": ((b, k), np.dtype(bool))}
    if num_classes is not None:
        out["labels"] = ((b, k, num_classes), np.dtype(np.float32))
    return out


def empty_batch(num_sequences: int, seq_len: int, max_images: int, patch_dim: int,
                num_classes: int | None = None) -> dict[str, np.ndarray]:
    """A packed batch holding no image (all padding), to be filled."""
    return {name: np.zeros(shape, dtype) for name, (shape, dtype) in
            layout(num_sequences, seq_len, max_images, patch_dim, num_classes).items()}


def image_tokens(image: np.ndarray, patch: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, C) image (sides multiples of the patch) as its patches (n, ph·pw·C) in
    row-major grid order, each flattened in (row, column, channel) order, and their (row,
    column) grid positions (n, 2) int32."""
    (ph, pw), (h, w, c) = patch, image.shape
    gh, gw = h // ph, w // pw
    patches = image.reshape(gh, ph, gw, pw, c).transpose(0, 2, 1, 3, 4).reshape(gh * gw, -1)
    positions = np.stack(np.divmod(np.arange(gh * gw), gw), axis=1).astype(np.int32)
    return patches, positions


def is_packed(x) -> bool:
    """Whether a model input is a packed batch (a mapping with the packed keys)."""
    return hasattr(x, "keys") and all(k in x for k in KEYS)
