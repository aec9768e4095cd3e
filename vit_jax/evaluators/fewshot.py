"""Few-shot linear evaluation of frozen pre-logits (big_vision's ``fewshot_lsr``).

For k shots: k training examples per class (drawn by a seeded permutation of each class's
examples), a linear classifier fitted in closed form by L2-regularised least squares to targets
in {-1, 1}, top-1 accuracy on the eval split; averaged over ``seeds`` draws. As big_vision does,
features are standardised with the mean and std of the k-shot set and get a constant feature of
100 as the bias (so the L2 penalty barely touches it), and ``l2_reg`` defaults to 2^10.

Config section: ``kind="fewshot"``, ``shots`` (default 1, 5, 10, 25), ``l2_reg``, ``seeds``
(default 3), ``train_split`` (default ``train``: where the shots come from; the whole split is
embedded once per call), ``split`` (default the eval split), ``data`` (overrides of the run's
data config: few-shot on another dataset, with its own classes). Metrics: ``<name>/<k>shot``.
Needs a model with pre-logits (a ViT: ``return_extras``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections as mlc
import numpy as np

from vit_jax.checks import is_int, is_number
from vit_jax.evaluators.features import TrainTestFeatures, standardise
from vit_jax.evaluators.section import check_data, section_data
from vit_jax.evaluators.view import ModelView

KEYS = ("shots", "l2_reg", "seeds", "train_split", "split", "data")
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2_REG = 2.0**10
BIAS_FEATURE = 100.0


def fit_ridge(x: np.ndarray, targets: np.ndarray, l2_reg: float) -> np.ndarray:
    """``argmin_w |x w - targets|^2 + l2_reg |w|^2`` in closed form (float64), through the
    smaller of the two Gram matrices: (x^T x + l I)^-1 x^T t, or x^T (x x^T + l I)^-1 t when there
    are fewer examples than features (the usual few-shot case)."""
    x, targets = np.asarray(x, np.float64), np.asarray(targets, np.float64)
    n, d = x.shape
    if n >= d:
        return np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ targets)
    return x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), targets)


def fewshot_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                     test_y: np.ndarray, num_classes: int, l2_reg: float) -> float:
    """Top-1 accuracy on (test_x, test_y) of the ridge classifier fitted on (train_x, train_y)
    after standardising with the training features' statistics and adding the bias feature."""
    train_z, test_z = (np.pad(z, ((0, 0), (0, 1)), constant_values=BIAS_FEATURE)
                       for z in standardise(np.asarray(train_x, np.float64),
                                            np.asarray(test_x, np.float64)))
    targets = 2.0 * np.eye(num_classes)[train_y] - 1.0
    w = fit_ridge(train_z, targets, l2_reg)
    return float(np.mean((test_z @ w).argmax(1) == test_y))


def shot_indices(labels: np.ndarray, num_classes: int, shots: int, seed: int) -> np.ndarray:
    """The first ``shots`` examples of each class under a permutation drawn from ``seed`` (the
    same draws for every k, so 5 shots contain the 1-shot example)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    return np.concatenate([idx[:shots] for idx in per_class])


class FewShot(TrainTestFeatures):
    """Built once per run (both splits opened once); called with the current model."""

    def __init__(self, data_config: Any, *, batch_size: int, shots: Sequence[int],
                 l2_reg: float, seeds: int, train_split: str, split: str | None,
                 prefix: str):
        super().__init__(data_config, batch_size=batch_size, train_split=train_split,
                         split=split, evaluator="few-shot")
        self.shots, self.l2_reg, self.seeds, self.prefix = tuple(shots), l2_reg, seeds, prefix

    def __call__(self, view: ModelView) -> dict[str, float]:
        train_x, train_y, test_x, test_y = self.features(view)
        out = {}
        for k in self.shots:
            accuracies = []
            for seed in range(self.seeds):
                idx = shot_indices(train_y, self.num_classes, k, seed)
                accuracies.append(fewshot_accuracy(train_x[idx], train_y[idx], test_x, test_y,
                                                   self.num_classes, self.l2_reg))
            out[f"{self.prefix}{k}shot"] = float(np.mean(accuracies))
        return out


def check_section(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> None:
    """Shots, l2_reg and seeds: positive numbers; ``data`` overrides valid; before any work."""
    check_data(config, name, section)
    shots = section.get("shots", DEFAULT_SHOTS)
    if not shots or not all(is_int(k) and k >= 1 for k in shots):
        raise ValueError(f"config.evals.{name}.shots={shots!r}: a list of integers >= 1 "
                         "(examples per class)")
    l2 = section.get("l2_reg", DEFAULT_L2_REG)
    if not (is_number(l2) and l2 > 0):
        raise ValueError(f"config.evals.{name}.l2_reg={l2!r} must be a number > 0")
    seeds = section.get("seeds", 3)
    if not (is_int(seeds) and seeds >= 1):
        raise ValueError(f"config.evals.{name}.seeds={seeds!r} must be an integer >= 1")


def from_config(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> FewShot:
    return FewShot(section_data(config, section),
                   batch_size=section.get("batch_size") or config.eval_batch_size,
                   shots=section.get("shots", DEFAULT_SHOTS),
                   l2_reg=section.get("l2_reg", DEFAULT_L2_REG),
                   seeds=section.get("seeds", 3),
                   train_split=section.get("train_split") or "train",
                   split=section.get("split"), prefix=f"{name}/")
