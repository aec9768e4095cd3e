"""What an evaluator is given: a model's split state, and how to jit a function of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from vit_jax import sharding


@dataclasses.dataclass
class ModelView:
    """The current model as ``(graphdef, state)``: the trainer's (model, optimizer) state on
    its mesh, or a standalone model (``ModelView.of(model)``) on the default device.

    ``key`` tells evaluators when a jitted function of an earlier view still applies (same
    graph, same shardings): training calls them every few hundred steps with new state only.
    """

    graphdef: Any
    state: Any
    mesh: jax.sharding.Mesh | None = None
    state_shardings: Any = None

    @classmethod
    def of(cls, model: nnx.Module) -> ModelView:
        graphdef, state = nnx.split(model)
        return cls(graphdef, state)

    @property
    def key(self) -> tuple[int, int]:
        return id(self.graphdef), id(self.mesh)

    def model(self, state: Any) -> nnx.Module:
        """The model inside ``state`` (inside a traced function)."""
        merged = nnx.merge(self.graphdef, state)
        return merged[0] if isinstance(merged, tuple) else merged

    def jit(self, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``fn(state, batch)`` jitted: for the mesh (batch split like training's, output
        replicated) or plainly."""
        if self.mesh is None:
            return jax.jit(fn)
        return sharding.jit_eval_step(fn, self.state_shardings, self.mesh)

    def put(self, batch: dict) -> Any:
        """A host batch on the view's devices."""
        return sharding.shard_batch(batch, self.mesh) if self.mesh is not None else batch
