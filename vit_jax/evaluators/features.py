"""Frozen pre-logits of whole splits: what the few-shot and linear-probe evaluators fit on."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from vit_jax import data
from vit_jax.evaluators.view import ModelView


class SplitFeatures:
    """One split of a data config, opened once; called with a model, its pre-logits and labels
    (every example once, in order, padding dropped, float64)."""

    def __init__(self, cfg: data.DataConfig, split: str, *, batch_size: int, evaluator: str):
        self.evaluator = evaluator
        # the eval pipeline over that split: every example once, in order, no augmentation
        self._loader = data.build_eval_iterator(
            cfg, batch_size=batch_size // jax.process_count(), split=split,
            process_index=jax.process_index(), process_count=jax.process_count())
        self._start = self._loader.get_state()
        self._jitted: tuple[Any, Any] | None = None

    def __call__(self, view: ModelView) -> tuple[np.ndarray, np.ndarray]:
        step = self._step(view)
        self._loader.set_state(self._start)
        feats, labels = [], []
        for batch in self._loader:
            x, y, mask = jax.device_get(step(view.state, view.put(batch)))
            keep = np.asarray(mask, bool)
            feats.append(np.asarray(x, np.float64)[keep])
            labels.append(np.asarray(y)[keep])
        self._loader.close()
        return np.concatenate(feats), np.concatenate(labels)

    def _step(self, view: ModelView):
        if self._jitted is None or self._jitted[0] != view.key:
            def representation(state, batch):
                out = view.model(state)(batch["image"], train=False, return_extras=True)
                if not isinstance(out, tuple):
                    raise ValueError(f"{self.evaluator} evaluation needs a model with "
                                     "pre-logits (a ViT); this model returns logits only")
                return out[1]["pre_logits"], batch["label"], batch["mask"]

            self._jitted = (view.key, view.jit(representation))
        return self._jitted[1]


class TrainTestFeatures:
    """What an evaluator fitting on frozen features opens once per run: the pre-logits of a
    train split and of a test split, and the dataset's class count."""

    def __init__(self, data_config: Any, *, batch_size: int, train_split: str,
                 split: str | None, evaluator: str):
        cfg = data.resolve(data_config)
        self.num_classes = data.dataset_info(cfg).num_classes
        self._train, self._test = (SplitFeatures(cfg, name, batch_size=batch_size,
                                                 evaluator=evaluator)
                                   for name in (train_split, split or cfg.eval_split))

    def features(self, view: ModelView) -> tuple[np.ndarray, ...]:
        """(train features, train labels, test features, test labels) of the model."""
        return (*self._train(view), *self._test(view))


def standardise(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every array standardised with ``train_x``'s per-feature mean and std (a batch norm without
    affine parameters, as MAE's linear probe and big_vision's few-shot use)."""
    mean = train_x.mean(0, keepdims=True)
    std = train_x.std(0, keepdims=True) + 1e-5
    return [(x - mean) / std for x in (train_x, *others)]
