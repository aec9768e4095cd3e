"""Linear probe: a softmax classifier fitted on frozen pre-logits of the train split.

The features are standardised with the training split's statistics (MAE's probe puts a batch
norm without affine parameters before its linear layer: the same map), then a linear layer with
bias is fitted by full-batch L-BFGS (``optax.lbfgs``, ``steps`` iterations, deterministic) to
minimise the mean cross-entropy + ``l2_reg``/2 |W|^2 (the bias unpenalised). A closed-form,
seedless fit, so a probe number moves only when the features do, unlike MAE's 90-epoch SGD
probe, which is the protocol for a final ImageNet figure rather than a periodic evaluator.

Config section: ``kind="linear_probe"``, ``l2_reg`` (default 1e-4), ``steps`` (default 200),
``train_split`` (default ``train``; embedded whole at every call), ``split`` (default the eval
split), ``data`` (overrides: probe another dataset, with its own classes). Metrics:
``<name>/accuracy`` (top-1 on ``split``) and ``<name>/train_accuracy``. Needs a model with
pre-logits (a ViT).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from vit_jax.checks import is_int, is_number
from vit_jax.evaluators.features import TrainTestFeatures, standardise
from vit_jax.evaluators.section import check_data, section_data
from vit_jax.evaluators.view import ModelView

KEYS = ("l2_reg", "steps", "train_split", "split", "data")
DEFAULT_L2_REG = 1e-4
DEFAULT_STEPS = 200


def probe_loss(params: dict, x: jax.Array, y: jax.Array, l2_reg: float) -> jax.Array:
    """Mean softmax cross-entropy of ``x @ w + b`` against integer labels + l2_reg/2 |w|^2."""
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2_reg * jnp.sum(params["w"] ** 2)


def fit_probe(x: np.ndarray, y: np.ndarray, num_classes: int, *, l2_reg: float,
              steps: int) -> dict[str, np.ndarray]:
    """``{"w", "b"}`` minimising ``probe_loss`` on (x, y) by ``steps`` L-BFGS iterations from
    zeros (float32)."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    return jax.device_get(_lbfgs(params, x, y, l2_reg, steps))


@functools.partial(jax.jit, static_argnames="steps")
def _lbfgs(params: dict, x: jax.Array, y: jax.Array, l2_reg: float, steps: int) -> dict:
    def loss(p):
        return probe_loss(p, x, y, l2_reg)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def iteration(_, carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                       value_fn=loss)
        return optax.apply_updates(params, updates), state

    params, _ = jax.lax.fori_loop(0, steps, iteration, (params, solver.init(params)))
    return params


def accuracy(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((x @ params["w"] + params["b"]).argmax(1) == y))


class LinearProbe(TrainTestFeatures):
    """Built once per run (both splits opened once); called with the current model."""

    def __init__(self, data_config: Any, *, batch_size: int, l2_reg: float, steps: int,
                 train_split: str, split: str | None, prefix: str):
        super().__init__(data_config, batch_size=batch_size, train_split=train_split,
                         split=split, evaluator="linear-probe")
        self.l2_reg, self.steps, self.prefix = l2_reg, steps, prefix

    def __call__(self, view: ModelView) -> dict[str, float]:
        train_x, train_y, test_x, test_y = self.features(view)
        train_z, test_z = (z.astype(np.float32) for z in standardise(train_x, test_x))
        params = fit_probe(train_z, train_y, self.num_classes, l2_reg=self.l2_reg,
                           steps=self.steps)
        return {f"{self.prefix}accuracy": accuracy(params, test_z, test_y),
                f"{self.prefix}train_accuracy": accuracy(params, train_z, train_y)}


def check_section(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> None:
    """l2_reg >= 0, steps >= 1, ``data`` overrides valid; before any work."""
    check_data(config, name, section)
    l2 = section.get("l2_reg", DEFAULT_L2_REG)
    if not (is_number(l2) and l2 >= 0):
        raise ValueError(f"config.evals.{name}.l2_reg={l2!r} must be a number >= 0")
    steps = section.get("steps", DEFAULT_STEPS)
    if not (is_int(steps) and steps >= 1):
        raise ValueError(f"config.evals.{name}.steps={steps!r} must be an integer >= 1 "
                         "(L-BFGS iterations)")


def from_config(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> LinearProbe:
    return LinearProbe(section_data(config, section),
                       batch_size=section.get("batch_size") or config.eval_batch_size,
                       l2_reg=section.get("l2_reg", DEFAULT_L2_REG),
                       steps=section.get("steps", DEFAULT_STEPS),
                       train_split=section.get("train_split") or "train",
                       split=section.get("split"), prefix=f"{name}/")
