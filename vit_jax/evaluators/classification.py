"""Top-1 accuracy and cross-entropy over a whole split (every example once, padding masked)."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections as mlc

from vit_jax import data, metrics
from vit_jax.checks import is_int
from vit_jax.evaluators.section import check_data, section_data
from vit_jax.evaluators.view import ModelView
from vit_jax.sizes import as_pair


class Classification:
    """Built once per run (the split is opened and probed once); called with the current model.

    ``split`` defaults to the data config's ``eval_split``; ``batch_size`` is global (divided
    among the processes, each of which evaluates its own shard). ``patch_size``: evaluate a
    FlexiViT model at that patch size (default: the model's own).
    """

    def __init__(self, data_config: Any, *, batch_size: int, split: str | None = None,
                 prefix: str = "eval/", patch_size: int | None = None):
        self.prefix = prefix
        self._flexi = {} if patch_size is None else {"patch_size": patch_size}
        self._batches = data.build_eval_iterator(
            data_config, batch_size=batch_size // jax.process_count(), split=split,
            process_index=jax.process_index(), process_count=jax.process_count())
        self._start = self._batches.get_state()
        self._jitted: tuple[Any, Any] | None = None  # (the view's key, its jitted step)

    def __call__(self, view: ModelView) -> dict[str, float]:
        step = self._step(view)
        self._batches.set_state(self._start)  # a new pass from the first batch
        total = None
        # The generator keeps no host batch alive after its step, so close() can free them.
        for out in (step(view.state, view.put(b)) for b in self._batches):
            total = out if total is None else total.merge(out)
        self._batches.close()
        return metrics.compute_eval_metrics(total, prefix=self.prefix)

    def _step(self, view: ModelView):
        if self._jitted is None or self._jitted[0] != view.key:
            def batch_metrics(state, batch):
                logits = view.model(state)(batch["image"], train=False, **self._flexi)
                return metrics.eval_batch_metrics(logits, batch["labels"], batch.get("mask"))

            self._jitted = (view.key, view.jit(batch_metrics))
        return self._jitted[1]


KEYS = ("split", "patch_size", "data")


def check_section(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> None:
    """``data`` overrides (another dataset: same classes as the run's) and ``patch_size`` (a
    FlexiViT model's, default: the model's own; it must cut the image)."""
    check_data(config, name, section)
    if section.get("data"):
        ours = data.dataset_info(config.data).num_classes
        try:
            theirs = data.dataset_info(section_data(config, section)).num_classes
        except data.DataError as e:
            raise ValueError(f"config.evals.{name}.data: {e}") from e
        if theirs != ours:
            raise ValueError(f"config.evals.{name}.data has {theirs} classes, the model "
                             f"{ours}: classify only data with the run's classes (use "
                             "kind='fewshot' for another label set)")
    patch = section.get("patch_size")
    if patch is None:
        return
    if not (is_int(patch) and patch >= 1):
        raise ValueError(f"config.evals.{name}.patch_size={patch!r} must be a positive "
                         "integer (a FlexiViT model's patch size; default: the model's)")
    image = config.model.get("image_size")
    if image is None:
        raise ValueError(f"config.evals.{name}.patch_size: only a ViT has patches")
    h, w = as_pair(image, "model.image_size")
    if h % patch or w % patch:
        raise ValueError(f"config.evals.{name}.patch_size={patch} does not divide the "
                         f"image size {h}x{w}")


def from_config(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> Classification:
    """The evaluator ``config.evals.<name>`` describes (defaults: the run's eval split and
    eval batch size); its metrics are named ``<name>/accuracy`` and ``<name>/loss``."""
    return Classification(section_data(config, section),
                          batch_size=section.get("batch_size") or
                          config.eval_batch_size, split=section.get("split"),
                          prefix=f"{name}/", patch_size=section.get("patch_size"))
