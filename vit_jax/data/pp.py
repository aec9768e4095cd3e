"""big_vision-style preprocessing strings: `"decode|resize(32)|flip_lr|value_range(-1,1)"`.

Each `|`-separated item is an op name, optionally called with Python-literal arguments, looked up
in the registry (`registry.valid_ops()`). Ops map an example dict to an example dict and run in
numpy/PIL inside grain workers. Random ops draw from the per-example generator the loader derives
from (seed, epoch, example index), so augmentation is reproducible and independent of worker
count, process count and iteration order.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

# Importing the op modules registers their ops.
from vit_jax.data import ops_erase, ops_image, ops_label, ops_randaug  # noqa: F401
from vit_jax.data.errors import DataError
from vit_jax.data.registry import lookup, valid_ops

Example = dict[str, Any]


class Preprocess:
    """A parsed pp string: a picklable chain of ops (grain ships it to worker processes)."""

    def __init__(self, spec: str, ops: list[tuple[str, Callable]]):
        self.spec = spec
        self.ops = ops
        self.needs_rng = any(getattr(op, "random", False) for _, op in ops)

    def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
        if rng is None and self.needs_rng:
            raise DataError(f"pp {self.spec!r} has random ops: pass a np.random.Generator")
        for name, op in self.ops:
            try:
                example = op(example, rng)
            except DataError:
                raise
            except Exception as e:
                raise DataError(f"pp op {name!r} failed: {type(e).__name__}: {e}") from e
        return example

    def without_label_ops(self) -> Preprocess:
        """This chain minus its ops that only make labels (`label_only`, e.g. `onehot`): what an
        unlabelled image goes through at prediction time, every image op unchanged."""
        items = self.spec.split("|")  # `build` made one op per item
        kept = [(item.strip(), op) for item, op in zip(items, self.ops, strict=True)
                if not getattr(op[1], "label_only", False)]
        return Preprocess("|".join(item for item, _ in kept), [op for _, op in kept])

    def __repr__(self) -> str:
        return f"Preprocess({self.spec!r})"


def build(spec: str) -> Preprocess:
    """Parses and validates a pp string; errors name the op at fault and the valid choices."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"pp string must be a non-empty str like 'decode|resize(32)', got {spec!r}")
    ops = []
    for item in spec.split("|"):
        name, args, kwargs = _parse_item(item.strip(), spec)
        factory = lookup(name)
        try:
            inspect.signature(factory).bind(*args, **kwargs)
        except TypeError as e:
            raise DataError(
                f"pp op {name!r}: bad arguments {item.strip()!r} ({e}); "
                f"signature: {name}{inspect.signature(factory)}"
            ) from None
        try:
            ops.append((name, factory(*args, **kwargs)))
        except (TypeError, ValueError) as e:
            raise DataError(f"pp op {name!r}: bad arguments {item.strip()!r}: {e}") from None
    return Preprocess(spec, ops)


def _parse_item(item: str, spec: str) -> tuple[str, tuple, dict]:
    try:
        node = ast.parse(item, mode="eval").body
    except SyntaxError:
        node = None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise DataError(
                f"pp op {node.func.id!r}: arguments must be Python literals, got {item!r}"
            ) from None
        if None in kwargs:
            raise DataError(f"pp op {node.func.id!r}: **kwargs are not supported in {item!r}")
        return node.func.id, args, kwargs
    raise DataError(
        f"cannot parse pp item {item!r} in {spec!r}: expected 'name' or 'name(args)' "
        f"separated by '|'; valid ops: {', '.join(valid_ops())}"
    )
