"""An exponential moving average of the weights, kept inside the optimizer state.

``optim.ema_decay=0.9999`` appends ``ema_transform`` to the update rule: after every step it sets
``ema = decay * ema + (1 - decay) * new_params`` (the first step copies the new parameters, so a
run that starts pretrained averages from its pretrained weights, not from a random init).
Living in the optax state makes the average part of what is already sharded like the
parameters, saved in every checkpoint (``opt/.../ema_params``) and restored bit-exactly on
resume, with no second code path. timm's ``ModelEmaV2`` and big_vision's
``ema_decay`` average the same way (no bias correction); the average is taken in the
parameters' dtype.

Training evaluates the average beside the raw weights (every evaluator's metrics again as
``<name>_ema/...``); ``load_model(workdir, weights="ema")`` loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

# The field names are what identifies the average inside any optimizer state (its pure dict).
EMA_KEY = "ema_params"
SUFFIX = "_ema"  # evaluator "eval" -> metrics "eval_ema/accuracy"


class EmaState(NamedTuple):
    ema_count: jax.Array  # steps averaged so far
    ema_params: Any  # the average, shaped (and sharded) like the parameters


def ema_transform(decay: float) -> optax.GradientTransformation:
    """Leaves the updates as they are; keeps the average of ``params + updates`` (last in a
    chain, so the updates are the final ones)."""

    def init(params: Any) -> EmaState:
        return EmaState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.copy, params))

    def update(updates: Any, state: EmaState, params: Any = None) -> tuple[Any, EmaState]:
        if params is None:
            raise ValueError("ema_transform needs the parameters (optax passes them in "
                             "nnx.Optimizer.update)")
        keep = jnp.where(state.ema_count == 0, 0.0, decay)

        def average(ema, param, update):
            new = param + update
            return (keep * ema + (1.0 - keep) * new).astype(ema.dtype)

        ema = jax.tree.map(average, state.ema_params, params, updates)
        return updates, EmaState(state.ema_count + 1, ema)

    return optax.GradientTransformation(init, update)


def find(tree: Any) -> Any | None:
    """The average inside an optimizer state (``nnx.State`` or its pure dict), or None."""
    if isinstance(tree, EmaState):
        return tree.ema_params
    if isinstance(tree, Mapping | nnx.State):
        if EMA_KEY in tree and "ema_count" in tree:
            return tree[EMA_KEY]
        children = tree.values()
    elif isinstance(tree, tuple | list):
        children = tree
    else:
        return None
    for child in children:
        found = find(child)
        if found is not None:
            return found
    return None


def overlay(model_tree: Any, ema_tree: Any) -> Any:
    """``model_tree`` (pure nested dict) with every leaf the average has replaced by it (the
    rest, e.g. RNG counters, kept)."""
    if not isinstance(model_tree, Mapping):
        return ema_tree if ema_tree is not None else model_tree
    return {k: overlay(v, ema_tree.get(k) if isinstance(ema_tree, Mapping) else None)
            for k, v in model_tree.items()}


def with_ema_weights(state: nnx.State) -> nnx.State | None:
    """The trainer's ``(model, optimizer)`` state with the model's parameters replaced by
    their average (same structure and shardings, so jitted evaluators apply as they are), or
    None when the run keeps no average."""
    ema = find(state[1])
    if ema is None:
        return None
    swapped = jax.tree.map(lambda x: x, state)  # new Variables around the same arrays
    nnx.replace_by_pure_dict(swapped[0], nnx.to_pure_dict(ema))
    return swapped


def rename(metrics: Mapping[str, Any], evaluator: str) -> dict[str, Any]:
    """``eval/accuracy`` -> ``eval_ema/accuracy`` for the metrics of evaluator ``evaluator``."""
    prefix = evaluator + "/"
    return {(evaluator + SUFFIX + "/" + k[len(prefix):] if k.startswith(prefix) else
             k + SUFFIX): v for k, v in metrics.items()}
