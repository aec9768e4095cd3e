"""What a sweep point costs: parameters, tokens, FLOPs, memory and throughput of one config.

Static numbers come from XLA compiling the real functions on abstract inputs (nothing is
allocated): FLOPs of the forward pass on one image, peak memory (``StepCost.peak_bytes``) of the
trainer's train step at the config's batch size. Throughput is timed
on the real jitted steps with a random batch, after a warm-up, so compile time and the input
pipeline are excluded (the run's own steps*batch/train_seconds, which includes both, is reported
next to it by the runner).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from flax import nnx

from vit_jax import sharding, train_state
from vit_jax.config import build_model
from vit_jax.models import count_params
from vit_jax.train_state import step_cost

MiB = 2**20


def _counting_config(config: mlc.ConfigDict) -> mlc.ConfigDict:
    """The same arithmetic without loops: XLA's cost analysis counts a while body once, so a
    scanned encoder or the chunked attention's block loops would be under-counted."""
    config = mlc.ConfigDict(config.to_dict())
    for key, value in (("scan", False), ("attention", "standard"), ("remat_policy", "none")):
        if key in config.model:
            config.model[key] = value
    return config


def measure(config: mlc.ConfigDict, num_classes: int, image_shape: tuple[int, int, int], *,
            throughput_steps: int = 5) -> dict:
    """params, tokens/image, forward GFLOPs/image, train-step peak MiB and (``throughput_steps``
    > 0) steady-state train and eval images/s. Each function is compiled once: the train step
    compiled for the memory analysis is the one that is timed, and the one the trainer runs."""
    model = nnx.eval_shape(lambda: build_model(config, num_classes))
    tokens = None
    if hasattr(model, "patch_size"):  # a ViT: tokens the encoder sees, prefix included
        ph, pw = model.patch_size
        tokens = (image_shape[0] // ph) * (image_shape[1] // pw) + model.num_prefix
    out = dict(params=count_params(model), tokens=tokens,
               gflops=forward_flops(config, num_classes, image_shape) / 1e9)
    train_step, create, mesh = compile_train_step(config, num_classes, image_shape)
    out["peak_memory_mib"] = step_cost(train_step).peak_bytes / MiB
    if throughput_steps:
        out.update(throughput(config, num_classes, image_shape, train_step, create, mesh,
                              steps=throughput_steps))
    return out


_FORWARD_FLOPS: dict[tuple, float] = {}  # the budget and the table ask for the same points


def forward_flops(config: mlc.ConfigDict, num_classes: int, image_shape) -> float:
    """XLA's FLOPs of the forward pass on one image (loops unrolled, see _counting_config);
    compiled once per model, classes and image shape in a process."""
    key = (json.dumps(config.model.to_dict(), sort_keys=True, default=str), num_classes,
           tuple(image_shape))
    if key not in _FORWARD_FLOPS:
        graphdef, state = nnx.split(nnx.eval_shape(
            lambda: build_model(_counting_config(config), num_classes)))
        image = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
        forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))
        _FORWARD_FLOPS[key] = step_cost(forward.lower(state, image).compile()).flops
    return _FORWARD_FLOPS[key]


def compile_train_step(config: mlc.ConfigDict, num_classes: int, image_shape):
    """The trainer's train step (``train_state.lower_train_step``: its mesh, shardings and
    donation) compiled for the config's batch from abstract inputs, so the trainer's own compile
    of it is a hit in JAX's persistent compilation cache (which ``run_sweep`` turns on); also
    returns ``create()`` -> (model, optimizer) and the mesh."""
    mesh = sharding.make_mesh(config.mesh)
    step = train_state.lower_train_step(config, num_classes, mesh, config.batch_size,
                                        image_shape)
    return step.lowered.compile(), train_state.config_state_factory(config, num_classes), mesh


def _time(fn, steps: int) -> float:
    """Seconds per call after a warm-up call (first-run allocations)."""
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def throughput(config: mlc.ConfigDict, num_classes: int, image_shape, train_step, create,
               mesh, *, steps: int = 5) -> dict:
    """Steady-state images/s of the train step (batch_size) and eval forward (eval_batch_size),
    on a state initialised as the trainer initialises it (``sharding.create_sharded_state``)."""
    graphdef, state, _ = sharding.create_sharded_state(create, mesh)
    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.integers(0, num_classes, n)
        return sharding.shard_batch(
            {"image": rng.uniform(-1, 1, (n, *image_shape)).astype(np.float32),
             "labels": np.eye(num_classes, dtype=np.float32)[labels]}, mesh)

    train_batch = batch(config.batch_size)
    key = jax.device_put(jax.random.PRNGKey(0), sharding.replicated(mesh))
    holder = [state]

    def train_once():
        holder[0], metrics = train_step(holder[0], train_batch, key)
        return metrics

    train_s = _time(train_once, steps)
    model_graph, model_state = nnx.split(nnx.merge(graphdef, holder[0])[0])
    forward = jax.jit(lambda s, x: nnx.merge(model_graph, s)(x, train=False))
    images = batch(config.eval_batch_size)["image"]
    eval_s = _time(lambda: forward(model_state, images), steps)
    return dict(train_img_s=config.batch_size / train_s,
                eval_img_s=config.eval_batch_size / eval_s)
