"""Process-level setup that must happen before JAX starts its backend (XLA flags)."""

from __future__ import annotations

import os


def configure_runtime() -> None:
    """Placeholder for backend-specific XLA flags; appended to any the user set."""
    os.environ.setdefault("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
