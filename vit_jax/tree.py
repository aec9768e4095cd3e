"""Names of things inside pytrees: the keys of a ``jax.tree_util`` path, nested dicts as paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """A ``jax.tree_util`` key path as plain names: ``(DictKey('encoder'), SequenceKey(0))``
    -> ``('encoder', '0')``."""
    return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": x, 0: y}}`` -> ``{"a/b": x, "a/0": y}``: parameter names as paths."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        out.update(flatten(v, name + "/") if isinstance(v, Mapping) else {name: v})
    return out
