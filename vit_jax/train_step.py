"""The train step, as a pure function of the split (model, optimizer) state.

Splitting once and jitting a pure function (instead of ``nnx.jit`` on the modules) keeps the
per-step Python overhead constant and lets the caller give input/output shardings and donate
the state buffers.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vit_jax import optim
from vit_jax.packing import MODEL_KEYS

Array = jax.Array


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy against one-hot (possibly smoothed / mixed) targets."""
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels).mean()




def packed_loss_and_accuracy(logits: Array, labels: Array, mask: Array) -> tuple[Array, Array]:
    """Cross-entropy and accuracy averaged over the real images of a packed batch (empty slots
    count for nothing)."""
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
    right = jnp.argmax(logits, -1) == jnp.argmax(labels, -1)
    return jnp.sum(ce * mask) / count, jnp.sum(right * mask) / count


def make_train_step(graphdef, *, grad_accum_steps: int = 1,
                    schedule: Callable | None = None, patch_size: int | None = None) -> Callable:
    """``step_fn(state, batch, rng) -> (state, metrics)``; rng is folded with the step count.

    Deriving the dropout key from (rng, step) makes a resumed run draw exactly the keys an
    uninterrupted run would have drawn. ``patch_size``: a FlexiViT step at that patch size.
    """
    flexi = {} if patch_size is None else {"patch_size": patch_size}

    def loss_fn(model, batch, key):
        if "patches" in batch:  # packed (data.packing): per-image logits (B, K, classes)
            logits = model({k: batch[k] for k in MODEL_KEYS if k in batch}, train=True, rng=key)
            return packed_loss_and_accuracy(logits, batch["labels"], batch["image_mask"])
        logits = model(batch["image"], train=True, rng=key, **flexi)
        loss = cross_entropy(logits, batch["labels"])
        accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(batch["labels"], -1))
        return loss, accuracy

    def step_fn(state, batch, rng):
        model, optimizer = nnx.merge(graphdef, state)
        step = optimizer.step[...]
        key = jax.random.fold_in(rng, step)
        grad_fn = nnx.value_and_grad(
            lambda m, mb: loss_fn(m, mb, jax.random.fold_in(key, _micro_index(mb))),
            has_aux=True)
        if grad_accum_steps > 1:
            micro_ids = jnp.arange(batch["labels"].shape[0]) % grad_accum_steps
            batch = {**batch, "_micro": micro_ids}
        (loss, accuracy), grads = optim.accumulate_gradients(grad_fn, model, batch,
                                                             grad_accum_steps)
        optimizer.update(model, grads)
        metrics = {"train/loss": loss, "train/accuracy": accuracy,
                   "train/grad_norm": optax.tree.norm(grads)}
        if "segment_ids" in batch:  # packed: what fraction of the tokens is padding
            metrics["train/padding"] = jnp.mean(batch["segment_ids"] == 0)
            metrics["train/images"] = jnp.sum(batch["image_mask"])
        if schedule is not None:
            metrics["train/lr"] = schedule(step)
        return nnx.state((model, optimizer)), metrics

    return step_fn


def _micro_index(batch) -> Array:
    """Which micro-batch this is (0 without accumulation), so each draws its own dropout key."""
    return batch["_micro"][0] if "_micro" in batch else jnp.int32(0)
