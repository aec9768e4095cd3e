"""``run_sweep``: a sweep config's kind picks how its points are run (``KINDS``)."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections as mlc

from vit_jax.paths import absolute
from vit_jax.sweep import flexi, grid, native, resolution

# kind -> module with ``run(sweep, workdir) -> records``
KINDS = {"grid": grid, "resolution": resolution, "flexi": flexi, "native": native}
COMPILE_CACHE = "compile_cache"  # in the sweep's workdir


def run_sweep(sweep: mlc.ConfigDict, workdir: str | Path) -> list[dict]:
    """Runs (or resumes) every point of ``sweep`` in ``workdir``; returns the point records and
    writes ``results.{json,csv,md}`` and the plots after every point."""
    kind = sweep.get("kind", "grid")
    if kind not in KINDS:
        raise ValueError(f"sweep kind {kind!r}; valid: {sorted(KINDS)}")
    workdir = absolute(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "sweep_config.json").write_text(sweep.to_json_best_effort(indent=2))
    use_compile_cache(workdir / COMPILE_CACHE)
    return KINDS[kind].run(sweep, workdir)


def use_compile_cache(directory: Path) -> None:
    """JAX's persistent compilation cache in the sweep's workdir, unless one is already chosen
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``): a point's measurements compile the train
    step the trainer then loads instead of compiling it again, and a resumed sweep loads what it
    compiled before (each program over JAX's one-second threshold)."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(directory))
