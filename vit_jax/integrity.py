"""A checkpoint step's own record of its files, so damage is found before it is restored.

Orbax writes a step into a temporary directory and renames it into place once every process
has written its part; it keeps no checksums of its own (TensorStore's zarr files have none by
default). ``seal`` runs at that moment, on process 0, between the last write and the rename:
it records the size and SHA-256 of every file in the step, inside the step. The record is
therefore in a step exactly when the step is complete, and ``check`` finds any file that was
later truncated, overwritten, deleted or replaced, naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

RECORD = "vit_jax_digest.json"
FORMAT = 1
# Orbax rewrites its step metadata (the commit time) and writes a marker when it renames the
# step into place, after the record: only required to be readable JSON.
FINALIZED_LATER = ("_CHECKPOINT_METADATA", "commit_success.txt")


def _files(step_dir: Path) -> list[Path]:
    later = {step_dir / name for name in FINALIZED_LATER}
    return sorted(p for p in step_dir.rglob("*")
                  if p.is_file() and p.name != RECORD and p not in later)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(step_dir: Path) -> None:
    """Writes the record of every file now in ``step_dir``."""
    files = {str(p.relative_to(step_dir)): [p.stat().st_size, _sha256(p)]
             for p in _files(step_dir)}
    (step_dir / RECORD).write_text(json.dumps({"format": FORMAT, "files": files}))


def check(step_dir: Path) -> str | None:
    """None when every recorded file is there with its size and checksum; else why not (one
    line, naming the first file that differs)."""
    path = step_dir / RECORD
    if not path.is_file():
        return f"no integrity record ({RECORD}: saved by an older vit_jax, or damaged)"
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"its integrity record {RECORD} is damaged"
    metadata = step_dir / FINALIZED_LATER[0]
    try:
        json.loads(metadata.read_text())
    except (OSError, ValueError):
        return f"{FINALIZED_LATER[0]} is missing or not JSON"
    for name, (size, sha) in sorted(files.items()):
        file = step_dir / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size:,} bytes, {size:,} were written"
        if _sha256(file) != sha:
            return f"{name} does not match its checksum (its bytes were changed)"
    return None
