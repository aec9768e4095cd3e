"""The type tests config validation shares: Python's bool is an int, and a flag or a JSON file
can turn a count into ``True``, so every "is this a count/number" check excludes it."""

from __future__ import annotations

from typing import Any


def is_int(x: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool)
