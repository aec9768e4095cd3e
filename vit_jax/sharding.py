"""Sharding: the device mesh, the logical-axis rules, sharded state creation and the jitted step.

Parameters name their axes logically (``nnx.Param(..., logical_axes=("embed", "mlp"))``);
``LOGICAL_RULES`` is the one place that maps those names onto the mesh axes
``("data", "fsdp", "tensor")``:

- ``data``: pure data parallelism, the batch is split and the state replicated;
- ``fsdp``: the batch is split *and* parameters and optimizer moments are sharded along their
  ``embed`` dimension (ZeRO-3 / FSDP): each device holds 1/fsdp of the state and XLA
  all-gathers a weight just before it is used;
- ``tensor``: attention heads and MLP hidden units are split (Megatron-style tensor
  parallelism), which also shards those weights and their moments.

A mesh config such as ``dict(data=-1, fsdp=1, tensor=1)`` is plain data parallelism;
``dict(data=2, fsdp=4, tensor=1)`` shards the state 4 ways. Jitting with these shardings is the
whole mechanism (GSPMD propagation over an ``AxisType.Auto`` mesh); the model code never names a
mesh axis.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vit_jax.tree import path_names

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# Logical axis name -> mesh axis (or tuple of mesh axes, or None = replicated). Every logical
# name used by a model must appear here: an unknown name is an error, not a silent replica.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # activations only: FSDP devices also split the batch
    ("embed", "fsdp"),            # the model width: every big matrix has it, so FSDP uses it
    ("mlp", "tensor"),            # MLP hidden units (Megatron column/row split)
    ("heads", "tensor"),          # attention heads (q/k/v column split, out row split)
    ("head_dim", None),
    ("classes", "tensor"),        # large heads (21k classes) split like an MLP layer
    ("layers", None),             # scan=True's stacked axis: each scan step needs its whole layer
    ("tokens", None),
    ("patch", None),
    ("channels", None),
)

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


# ----------------------------------------------------------------------------- mesh


def mesh_shape(mesh_cfg: Mapping[str, int] | Any, num_devices: int) -> dict[str, int]:
    """Resolves a ``dict(data=-1, fsdp=2, tensor=1)`` config to concrete axis sizes.

    Missing axes have size 1; one axis may be -1 to take the devices the others leave.
    """
    given = dict(mesh_cfg.items()) if hasattr(mesh_cfg, "items") else dict(mesh_cfg)
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; valid axes: {list(MESH_AXES)}")
    sizes = {name: int(given.get(name, 1)) for name in MESH_AXES}
    free = [name for name, size in sizes.items() if size == -1]
    bad = {name: size for name, size in sizes.items() if size < 1 and size != -1}
    if bad or len(free) > 1:
        raise ValueError(f"mesh sizes must be positive ints with at most one -1, got {sizes}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {sizes}: the fixed axes use {fixed} devices, which does not divide the "
                f"{num_devices} available; make the fixed sizes multiply to a divisor of "
                f"{num_devices} ({_divisors(num_devices)})")
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"mesh {sizes} uses {fixed} devices but {num_devices} are available; the sizes must "
            f"multiply to {num_devices}, or set one axis to -1 (e.g. data=-1) to take the rest")
    return sizes


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def make_mesh(mesh_cfg: Mapping[str, int] | Any, devices: list | None = None) -> Mesh:
    """The ``("data", "fsdp", "tensor")`` mesh over ``devices`` (default: all devices).

    Axis types are ``Auto`` so that jit propagates shardings from the annotated inputs and
    parameters (jax's default since 0.9 is ``Explicit``, which would need sharding-aware model
    code). ``tensor`` is the innermost axis, so on real hardware it lands on the fastest links.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                         axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


# ----------------------------------------------------------------------------- rules


def logical_to_spec(logical_axes: tuple[str | None, ...], shape: tuple[int, ...] | None = None,
                    mesh: Mesh | AbstractMesh | None = None, rules: Rules = LOGICAL_RULES) -> P:
    """Maps logical axis names to a ``PartitionSpec`` via ``rules``.

    With a ``shape`` and ``mesh``, a dimension not divisible by its mesh axes' total size is
    replicated instead (e.g. 10 classes on tensor=4, or a width-64 test model on fsdp=128):
    jit would reject an uneven split, and replicating one small weight costs little memory.
    A mesh axis may shard only one dimension of an array, so a later repeat is replicated too.
    """
    table = dict(rules)
    unknown = [name for name in logical_axes if name is not None and name not in table]
    if unknown:
        raise ValueError(f"logical axes {unknown} have no sharding rule; add them to "
                         f"vit_jax.sharding.LOGICAL_RULES (known: {sorted(table)})")
    used: set[str] = set()
    spec = []
    for i, name in enumerate(logical_axes):
        target = table[name] if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        if mesh is not None:
            axes = tuple(a for a in axes if a in mesh.shape)
            size = math.prod(mesh.shape[a] for a in axes)
            if (shape is not None and shape[i] % size) or used.intersection(axes):
                axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _value(leaf: Any) -> Any:
    return leaf.get_value() if _is_variable(leaf) else leaf


def _leaf_axes(leaf: Any) -> tuple[str | None, ...] | None:
    """The leaf's logical axes, with "layers" prepended for the stacked axis of scanned blocks."""
    axes = leaf.get_metadata().get("logical_axes") if _is_variable(leaf) else None
    if axes is None:
        return None
    ndim = len(_value(leaf).shape)
    if ndim == len(axes) + 1:
        return ("layers", *axes)
    if ndim != len(axes):
        raise ValueError(f"logical_axes {axes} do not fit a parameter of shape "
                         f"{_value(leaf).shape}")
    return tuple(axes)


def param_partition_specs(abstract_state: Any, mesh: Mesh | AbstractMesh | None = None,
                          rules: Rules = LOGICAL_RULES) -> Any:
    """A ``PartitionSpec`` for every Variable of ``nnx.state((model, optimizer))``.

    Parameters use their ``logical_axes`` metadata. Optimizer moments mirror their parameter:
    flax 0.12 copies the Param metadata onto the ``OptVariable`` moments, and a moment that lost
    it (an optax transform that rebuilds its state) is matched by path suffix and shape to its
    parameter (``.../mu/encoder/.../kernel`` -> ``encoder/.../kernel``). Everything else (step
    counts, RNG keys, scalars) is replicated. The result has the state's tree structure with
    each Variable replaced by its spec, a valid prefix tree for jit's shardings.
    """
    leaves = jax.tree_util.tree_leaves_with_path(abstract_state, is_leaf=_is_variable)
    params = {path_names(path): (tuple(_value(leaf).shape), _leaf_axes(leaf))
              for path, leaf in leaves
              if isinstance(leaf, nnx.Param) and _leaf_axes(leaf) is not None}
    # Moments live under the optimizer, so their paths lack the state's leading (model,
    # optimizer) index: index parameters without it too, exact paths taking precedence.
    by_path = {**{names[1:]: found for names, found in params.items()}, **params}

    def spec(path: tuple[Any, ...], leaf: Any) -> P:
        shape = tuple(getattr(_value(leaf), "shape", ()))
        axes = _leaf_axes(leaf) or _match_param(path_names(path), shape, by_path)
        if axes is None:
            return P()
        return logical_to_spec(axes, shape, mesh, rules)

    return jax.tree_util.tree_map_with_path(spec, abstract_state, is_leaf=_is_variable)


def _match_param(names: tuple[str, ...], shape: tuple[int, ...],
                 by_path: dict[tuple[str, ...], tuple[tuple[int, ...], tuple]]) -> tuple | None:
    """The logical axes of the parameter whose path is the longest suffix of ``names``."""
    if not shape:
        return None
    for start in range(len(names)):
        found = by_path.get(names[start:])
        if found is not None and found[0] == shape:
            return found[1]
    return None


def named_shardings(specs: Any, mesh: Mesh) -> Any:
    """PartitionSpec tree -> NamedSharding tree on ``mesh``."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, P))


# ----------------------------------------------------------------------------- state


def create_sharded_state(create_fn: Callable[[], Any], mesh: Mesh,
                         rules: Rules = LOGICAL_RULES) -> tuple[Any, Any, Any]:
    """Builds ``create_fn()`` (e.g. ``lambda: (model, optimizer)``) directly in sharded form.

    The shapes come from ``nnx.eval_shape`` (no memory); the initialiser then runs under jit with
    ``out_shardings``, so each device computes only its own shard of every parameter and moment
    and no full copy ever exists on one device or the host (what makes a model larger than one
    device's memory possible). jax's partitionable threefry draws the same bits whatever the
    sharding, so the values equal an unsharded jitted initialisation (eager creation may round
    a transformed draw 1 ulp differently). Returns ``(graphdef, state, shardings)``.
    """
    graphdef, abstract_state = nnx.split(nnx.eval_shape(create_fn))
    shardings = named_shardings(param_partition_specs(abstract_state, mesh, rules), mesh)
    init = _in_mesh_context(lambda: nnx.split(create_fn())[1], mesh)
    state = jax.jit(init, out_shardings=shardings)()
    return graphdef, state, shardings


# ----------------------------------------------------------------------------- batch


def replicated(mesh: Mesh) -> NamedSharding:
    """Whole on every device of ``mesh`` (the rng, the metrics)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (example) axis split over ``data`` and ``fsdp``; all other axes whole."""
    return NamedSharding(mesh, logical_to_spec(("batch",), mesh=mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Puts a host-local numpy batch on the mesh as global arrays split along the batch axis.

    With one process the local batch is the global batch (``jax.device_put``); with several,
    each process holds its slice and the global batch is their concatenation
    (``jax.make_array_from_process_local_data``), so the loader reads
    ``batch_size // process_count`` examples per process.
    """
    sharding = batch_sharding(mesh)
    split = math.prod(mesh.shape[a] for a in ("data", "fsdp"))

    def put(x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0 or (x.shape[0] * jax.process_count()) % split:
            raise ValueError(
                f"batch leaf of shape {x.shape} cannot be split over data*fsdp={split} devices; "
                f"use a global batch size divisible by {split}")
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(put, batch)


# ----------------------------------------------------------------------------- step


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...],
              rules: Rules = LOGICAL_RULES) -> jax.Array:
    """Pins an activation's sharding by logical names, e.g. tokens ``("batch", None, None)``.

    A hook for model code: GSPMD propagates from the parameters as eagerly as from the batch,
    and with FSDP (``embed`` on the same devices that split the batch) its backward pass may
    choose to split activations along ``embed`` and all-gather the whole batch instead.
    A no-op outside a mesh context (single device, notebooks); ``jit_train_step`` provides it.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, x.shape, mesh, rules))


def _in_mesh_context(fn: Callable, mesh: Mesh) -> Callable:
    """Traces ``fn`` with ``mesh`` as the context mesh so that ``constrain`` calls take effect."""

    @functools.wraps(fn)  # keeps the step's name in profiles and HLO dumps
    def wrapped(*args: Any) -> Any:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)

    return wrapped


def jit_train_step(step_fn: Callable, state_shardings: Any, mesh: Mesh) -> Callable:
    """``step_fn(state, batch, rng) -> (state, metrics)`` jitted for ``mesh``.

    The state keeps its shardings across steps (in == out) and its buffers are donated, so an
    update needs no second copy of the parameters and moments. Metrics come back replicated.
    """
    return jax.jit(_in_mesh_context(step_fn, mesh),
                   in_shardings=(state_shardings, batch_sharding(mesh), replicated(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)),
                   donate_argnums=0)


def jit_eval_step(eval_fn: Callable, state_shardings: Any, mesh: Mesh) -> Callable:
    """``eval_fn(state, batch) -> metrics`` jitted for ``mesh``; the state is not donated."""
    return jax.jit(_in_mesh_context(eval_fn, mesh),
                   in_shardings=(state_shardings, batch_sharding(mesh)),
                   out_shardings=replicated(mesh))


# ----------------------------------------------------------------------------- memory


def per_device_bytes(state: Any) -> dict[str, dict[str, int]]:
    """Bytes of parameters, optimizer state and the rest: one device's share and the total.

    Works on concrete sharded arrays and on abstract ones carrying a ``sharding`` (e.g. from
    ``jax.eval_shape``). Per-device counts the shard each device holds (a replicated array
    counts in full), which is what must fit in one accelerator's memory.
    """
    report = {kind: {"per_device": 0, "total": 0} for kind in ("params", "optimizer", "other")}
    for leaf in jax.tree.leaves(state, is_leaf=_is_variable):
        kind = ("params" if isinstance(leaf, nnx.Param)
                else "optimizer" if isinstance(leaf, nnx.OptState)
                else "other")
        x = _value(leaf)
        if not hasattr(x, "shape") or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            continue
        itemsize = np.dtype(x.dtype).itemsize
        sharding = getattr(x, "sharding", None)
        shard = sharding.shard_shape(x.shape) if sharding is not None else x.shape
        report[kind]["per_device"] += math.prod(shard) * itemsize
        report[kind]["total"] += math.prod(x.shape) * itemsize
    return report
