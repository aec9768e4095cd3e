"""The one builder of what a train step needs, and XLA's account of the compiled step.

Training, the planner, the sweep measurements and the benchmarks all build the same thing: a
``(model, nnx.Optimizer)`` pair (concrete, sharded or abstract), the pure train step over its
split state, and, compiled, its FLOPs and memory. They build it here, so they cannot disagree
on the optimizer (``optim_config``: ``optim.total_steps`` defaults to the run's length) or on
what "peak memory" means (``StepCost.peak_bytes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
from flax import nnx

from vit_jax import optim, sharding
from vit_jax.packing import layout
from vit_jax.train_step import make_train_step


def optim_config(config: mlc.ConfigDict) -> dict:
    """The optimizer section of a run config, with ``total_steps`` defaulting to the run's."""
    cfg = config.optim.to_dict()
    cfg["total_steps"] = cfg.get("total_steps") or config.total_steps
    return cfg


def state_factory(model_fn: Callable[[], nnx.Module],
                  optim_cfg: Mapping[str, Any]) -> Callable[[], tuple[nnx.Module, nnx.Optimizer]]:
    """``create() -> (model, optimizer)``: what ``nnx.eval_shape`` (abstract state), the sharded
    initialiser (``sharding.create_sharded_state``) or a plain call builds."""
    tx = optim.build_tx(optim_cfg)

    def create():
        model = model_fn()
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    return create


def config_state_factory(config: mlc.ConfigDict, num_classes: int):
    """``state_factory`` for the model and optimizer a run config describes."""
    from vit_jax.config import build_model

    return state_factory(lambda: build_model(config, num_classes), optim_config(config))


def abstract_state(create: Callable[[], Any]) -> tuple[Any, Any]:
    """(graphdef, state of ShapeDtypeStructs): shapes only, no parameter memory."""
    return nnx.split(nnx.eval_shape(create))


def train_step(graphdef: Any, optim_cfg: Mapping[str, Any],
               patch_size: int | None = None) -> Callable:
    """The pure train step for a state split from ``state_factory``'s pair (with the
    learning-rate schedule it logs and the gradient accumulation the config asks for);
    ``patch_size``: FlexiViT's step at that patch size."""
    return make_train_step(graphdef, schedule=optim.build_schedule(optim_cfg),
                           grad_accum_steps=optim.resolve(optim_cfg)["grad_accum_steps"],
                           patch_size=patch_size)


def abstract_batch(batch: int, image_shape: tuple[int, ...], num_classes: int,
                   sharding: Any = None, packing: Any = None) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes of what the train step reads from a batch (the pipeline's batches also hold
    the integer ``label``, which jit drops as unused). With ``packing`` (``data.packing``):
    ``batch`` packed sequences of ``seq_len`` patches holding up to ``max_images`` images."""
    def spec(shape, dtype=jnp.float32):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    if not packing:
        return {"image": spec((batch, *image_shape)), "labels": spec((batch, num_classes))}
    p = packing["patch_size"]
    arrays = layout(batch, packing["seq_len"], packing["max_images"], p * p * image_shape[-1],
                    num_classes)
    return {name: spec(shape, dtype) for name, (shape, dtype) in arrays.items()}


@dataclasses.dataclass(frozen=True)
class LoweredStep:
    """The trainer's train step lowered on abstract inputs, and what it was lowered for."""

    lowered: Any  # jax.stages.Lowered
    abstract_state: Any
    shardings: Any  # the state's NamedShardings
    inputs: dict[str, jax.ShapeDtypeStruct]  # the batch


def lower_train_step(config: mlc.ConfigDict, num_classes: int, mesh: Any, batch: int,
                     image_shape: tuple[int, ...], packing: Any = None) -> LoweredStep:
    """The train step exactly as the trainer jits it (``sharding.jit_train_step``: the state's
    shardings on ``mesh``, the batch split over it, state donated), lowered from shapes alone.

    Exactly: the planner and the sweep measure the program the trainer runs, and the trainer's
    own compile of it is a compilation-cache hit where a persistent cache is on.
    """
    graphdef, abstract = abstract_state(config_state_factory(config, num_classes))
    shardings = sharding.named_shardings(sharding.param_partition_specs(abstract, mesh), mesh)
    step = sharding.jit_train_step(train_step(graphdef, optim_config(config)), shardings, mesh)
    inputs = abstract_batch(batch, image_shape, num_classes, sharding.batch_sharding(mesh),
                            packing=packing)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
    return LoweredStep(step.lower(abstract, inputs, rng), abstract, shardings, inputs)


@dataclasses.dataclass(frozen=True)
class StepCost:
    """XLA's cost and memory analysis of one compiled program, per device.

    ``peak_bytes`` is the one definition of peak memory in this project: what the buffers of
    one call hold at once, arguments + outputs - aliased (donated) + temporaries (activations
    kept for the backward pass, gradients, optimizer scratch). The compiled code itself
    (``code_bytes``) is reported apart: on XLA:CPU it is host memory, on GPU/TPU a few MB.
    """

    flops: float
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def step_cost(compiled: Any) -> StepCost:
    """``StepCost`` of a ``jax.stages.Compiled``."""
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) else cost) or {}
    mem = compiled.memory_analysis()
    return StepCost(flops=float(cost.get("flops", 0.0)),
                    argument_bytes=mem.argument_size_in_bytes,
                    output_bytes=mem.output_size_in_bytes,
                    alias_bytes=mem.alias_size_in_bytes,
                    temp_bytes=mem.temp_size_in_bytes,
                    code_bytes=mem.generated_code_size_in_bytes)
