"""Name -> preprocessing-op factory registry: adding an op is one decorated class in one file."""

from __future__ import annotations

from collections.abc import Callable

from vit_jax.data.errors import DataError

_OPS: dict[str, Callable] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: `@register("flip_lr") class FlipLR: ...` makes `flip_lr(...)` usable."""

    def wrap(cls: type) -> type:
        if name in _OPS:
            raise ValueError(f"pp op {name!r} is registered twice")
        _OPS[name] = cls
        return cls

    return wrap


def lookup(name: str) -> Callable:
    if name not in _OPS:
        raise DataError(f"unknown pp op {name!r}; valid ops: {', '.join(valid_ops())}")
    return _OPS[name]


def valid_ops() -> list[str]:
    return sorted(_OPS)
