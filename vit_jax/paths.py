"""Paths as users type them (relative, ``~``-prefixed or through symlinks), and files written
whole or not at all.

Orbax (and the processes a launcher starts) need absolute paths, and a path printed in a log
should say where the files really are. Every place that accepts a path from a user (a flag, a
config key, an argument of a public function) passes it through ``absolute`` once, at the
boundary, so nothing further in needs to care what the user typed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path


def absolute(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded, made absolute against the current directory, symlinks
    resolved (the target need not exist yet)."""
    if path is None or str(path) == "":
        raise ValueError("empty path")
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file renamed over it: a reader (or a
    run killed meanwhile) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def output_file(path: str | os.PathLike) -> Path:
    """The absolute path to write, its directory created (with the umask's permissions)."""
    path = absolute(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_like_open(path: Path, write: Callable[[Path], None]) -> None:
    """``write(path)``, leaving the file the mode a plain ``open(path, 'wb')`` would: the umask's
    for a new file, its own for an existing one (safetensors' writer makes every file 0600)."""
    with path.open("ab"):  # creates it as open() does; an existing file keeps its mode
        pass
    mode = stat.S_IMODE(path.stat().st_mode)
    write(path)
    path.chmod(mode)
