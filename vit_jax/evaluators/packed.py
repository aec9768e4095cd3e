"""Classification at native resolution: each eval image at its own aspect ratio within a token
budget, several packed into each sequence (NaViT's evaluation).

  config.evals.native = dict(kind="packed", max_tokens=64, max_images=4,
                             pp="decode|resize_tokens(64, 4)|value_range(-1,1)|onehot(10)")

``pp`` gives each image its own size (``resize_tokens(max_tokens, patch)``: at most
``max_tokens`` patches, aspect ratio kept); ``max_images`` images share a sequence of
``max_images * max_tokens`` tokens (``vit_jax.data.packed_eval``); ``batch_size`` counts
sequences (default: the run's eval batch size / max_images, rounded up to the devices).
Metrics: ``<name>/accuracy``, ``/loss``, ``/top5`` over every image of the split once,
``/padding`` (the fraction of padding tokens in the sequences holding images) and ``/tokens``
(mean patches per image).
The model must pool each image (no class token, ``pool`` gap or map); a learned position
table bounds the grid an image may have.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections as mlc
import numpy as np

from vit_jax import data, metrics, sharding
from vit_jax.checks import is_int
from vit_jax.data.packed_eval import PackedEvalBatches
from vit_jax.evaluators.section import check_data, section_data
from vit_jax.evaluators.view import ModelView

KEYS = ("split", "data", "pp", "max_tokens", "max_images")
DEFAULT_MAX_IMAGES = 4


class PackedClassification:
    """Built once per run; the model's patch size and position table are read at the first
    call (the batches are cut for them then)."""

    def __init__(self, data_config: Any, *, pp: str, max_tokens: int,
                 max_images: int = DEFAULT_MAX_IMAGES, batch_size: int,
                 split: str | None = None, prefix: str = "eval/"):
        self._data, self._split, self.prefix = data.resolve(data_config), split, prefix
        self._pp, self.max_tokens, self.max_images = pp, max_tokens, max_images
        self._sequences = batch_size
        self._batches: tuple[Any, PackedEvalBatches] | None = None  # (patch, grid), batches
        self._jitted: tuple[Any, Any] | None = None

    def batches(self, model) -> PackedEvalBatches:
        """The eval split packed for ``model``'s patch size and position table."""
        ph, pw = model.patch_size
        if ph != pw:
            raise ValueError(f"{self.prefix}: packed evaluation needs square patches, the "
                             f"model's are {ph}x{pw}")
        grid = model.posemb.max_grid
        if self._batches is None or self._batches[0] != (ph, grid):
            procs = jax.process_count()
            self._batches = ((ph, grid), PackedEvalBatches(
                self._data, pp=self._pp, patch_size=ph, max_tokens=self.max_tokens,
                max_images=self.max_images, batch_size=self._sequences // procs,
                split=self._split, process_index=jax.process_index(), process_count=procs,
                max_grid=grid))
        return self._batches[1]

    def __call__(self, view: ModelView) -> dict[str, float]:
        batches = self.batches(view.model(view.state))
        step = self._step(view)
        total, tokens, padding, images = None, 0, 0, 0
        for batch in batches:
            out = step(view.state, view.put(batch))
            total = out if total is None else total.merge(out)
            used = batch["image_mask"].any(axis=1)  # the last batch's empty sequences aside
            real = int(np.count_nonzero(batch["segment_ids"]))
            tokens, padding = tokens + real, padding + batch["segment_ids"][used].size - real
            images += int(batch["image_mask"].sum())
        # each process counted its own share; the fractions are alike across processes
        result = metrics.compute_eval_metrics(total, prefix=self.prefix)
        result[f"{self.prefix}padding"] = padding / max(tokens + padding, 1)
        result[f"{self.prefix}tokens"] = tokens / max(images, 1)
        return result

    def compile(self, view: ModelView) -> None:
        """Compiles the step for ``view`` on the first batch, without a pass over the split:
        a later call then times the steady state (the native sweep's eval img/s)."""
        batches = self.batches(view.model(view.state))
        jax.block_until_ready(self._step(view)(view.state, view.put(batches.batch(0))))

    def _step(self, view: ModelView):
        if self._jitted is None or self._jitted[0] != view.key:
            def batch_metrics(state, batch):
                logits = view.model(state)(batch, train=False)  # (B, K, classes)
                classes = logits.shape[-1]
                return metrics.eval_batch_metrics(
                    logits.reshape(-1, classes), batch["labels"].reshape(-1, classes),
                    batch["image_mask"].reshape(-1))

            self._jitted = (view.key, view.jit(batch_metrics))
        return self._jitted[1]


def check_section(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> None:
    """``pp`` (giving each image its size), ``max_tokens`` and ``max_images`` (positive ints);
    the model's fitness is checked with the model (``config.validate``)."""
    check_data(config, name, section)
    for key in ("max_tokens", "max_images"):
        value = section.get(key)
        required = key == "max_tokens"
        if (required or value is not None) and not (is_int(value) and value >= 1):
            raise ValueError(f"config.evals.{name}.{key}={value!r} must be a positive "
                             "integer (patches per image / images per sequence)")
    sequences, multiple = section.get("batch_size"), sequences_multiple(config)
    if sequences is not None and sequences % multiple:
        raise ValueError(f"config.evals.{name}.batch_size={sequences} (sequences per step) is "
                         f"not divisible by {multiple}, the processes and data*fsdp devices "
                         "a batch is split over")
    pp = section.get("pp")
    if not (isinstance(pp, str) and pp):
        raise ValueError(f"config.evals.{name}.pp must be the eval pp string giving each image "
                         "its own size, e.g. 'decode|resize_tokens(64, 16)|value_range(-1,1)|"
                         "onehot(1000)'")
    try:
        data.build_pp(pp)
    except (ValueError, TypeError) as e:
        raise ValueError(f"config.evals.{name}.pp: {e}") from None


def sequences_multiple(config: mlc.ConfigDict) -> int:
    """What a step's sequence count must be a multiple of: the processes and the data*fsdp
    devices its batch is split over."""
    mesh = sharding.mesh_shape(config.mesh, jax.device_count())
    return math.lcm(mesh["data"] * mesh["fsdp"], jax.process_count())


def from_config(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict
                ) -> PackedClassification:
    """Default ``batch_size``: the run's eval batch size in images over ``max_images``,
    rounded up to a multiple of the devices a batch is split over."""
    max_images = section.get("max_images") or DEFAULT_MAX_IMAGES
    multiple = sequences_multiple(config)
    sequences = section.get("batch_size") or \
        -(-max(1, config.eval_batch_size // max_images) // multiple) * multiple
    return PackedClassification(section_data(config, section), pp=section["pp"],
                                max_tokens=section["max_tokens"], max_images=max_images,
                                batch_size=sequences, split=section.get("split"),
                                prefix=f"{name}/")
