"""One run per workdir: a second run on the same workdir refuses at once instead of deleting
the first one's unfinished saves and writing its metrics twice.

The lock is an ``flock`` on ``<workdir>/.vit_jax.lock`` held by process 0 for the whole run
(the kernel drops it when the process dies, however it dies); the file names the holder (host,
pid, start time) so the refusal can say who. A file that still names a holder while nobody
holds the lock was left by a run that was killed: it is taken over, and the caller says so.
On a shared filesystem ``flock`` must reach the other hosts (NFSv4 and Lustre do; some FUSE
filesystems do not, and then only runs on the same host are kept apart).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO

LOCK_FILE = ".vit_jax.lock"


class WorkdirBusyError(ValueError):
    """Another run holds the workdir (a ValueError: the command line prints it in one line)."""


class RunLock:
    """Held from ``acquire()`` to ``release()`` (or the process's end)."""

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> str | None:
        """Takes the lock; returns a line about a dead run's lock it took over, or None.
        Raises ``WorkdirBusyError`` naming the live holder."""
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(f))
            f.close()
            raise WorkdirBusyError(
                f"{self.path.parent} is in use by another run ({holder}); wait for it to end, "
                "stop it, or use another --workdir") from None
        previous = _read(f)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "started": datetime.datetime.now().isoformat(timespec="seconds")}))
        f.flush()
        self._file = f
        if previous:
            return (f"Took over the lock of a run that is no longer running "
                    f"({_describe(previous)})")
        return None

    def release(self) -> None:
        """Empties the file (a clean end leaves nothing to take over) and unlocks."""
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.flush()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def _read(f: IO[str]) -> dict:
    f.seek(0)
    try:
        return json.loads(f.read() or "{}")
    except ValueError:
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "host and pid unknown"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"
