"""Paths as users type them: relative, ``~``-prefixed or through symlinks.

Orbax (and the processes a launcher starts) need absolute paths, and a path printed in a log
should say where the files really are. Every place that accepts a path from a user (a flag, a
config key, an argument of a public function) passes it through ``absolute`` once, at the
boundary, so nothing further in needs to care what the user typed.
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded, made absolute against the current directory, symlinks
    resolved (the target need not exist yet)."""
    if path is None or str(path) == "":
        raise ValueError("empty path")
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def display(path: str | os.PathLike) -> str:
    """``path`` relative to the current directory when it lies below it (shorter in logs)."""
    path = absolute(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
