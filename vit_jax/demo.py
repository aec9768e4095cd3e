"""A trained workdir for notebooks and examples: ``runs/quickstart`` if it exists, else seconds
of training on the embedded digits, so every notebook runs on a fresh machine (and in CI).

The small run is cached in ``runs/demo`` (one per step count), so the notebooks share one
training; a file lock makes notebooks started at the same time train it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_WORKDIR = REPO / "runs" / "quickstart"
DEMO_ROOT = REPO / "runs" / "demo"


def quick_config(steps: int = 150):
    """configs/quickstart.py shrunk to seconds: a 2-layer, 64-wide ViT, higher lr, sync saves."""
    from vit_jax.config import load_config_file

    config = load_config_file(REPO / "configs" / "quickstart.py")
    config.model.update(width=64, depth=2, num_heads=2, mlp_dim=128)
    config.update(total_steps=steps, batch_size=64, eval_every_steps=steps,
                  checkpoint_every_steps=steps, log_every_steps=max(1, steps // 3))
    config.optim.update(lr=3e-3, warmup_steps=max(1, steps // 10))
    config.checkpoint.async_save = False
    return config


def trained_workdir(workdir: str | Path | None = None, *, steps: int = 150) -> Path:
    """``workdir`` (default ``runs/quickstart``) if its latest checkpoint verifies; else the cached
    small run ``runs/demo/steps_<steps>``, trained first if missing (``quick_config(steps)``).

    The training log is hidden (it is long); one line says what was used or trained.
    """
    path = Path(workdir) if workdir is not None else QUICKSTART_WORKDIR
    why = _unusable(path)
    if why is None:
        print(f"using the trained run {path}")
        return path
    cached = DEMO_ROOT / f"steps_{steps}"
    DEMO_ROOT.mkdir(parents=True, exist_ok=True)
    with open(DEMO_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another notebook may be training it right now
        if _unusable(cached) is None:
            print(f"{path}: {why}; using the cached small run {cached}")
            return cached
        from vit_jax.train import train_and_evaluate

        tmp = Path(tempfile.mkdtemp(prefix=f".steps_{steps}_", dir=DEMO_ROOT))
        with contextlib.redirect_stdout(io.StringIO()):
            results = train_and_evaluate(quick_config(steps), tmp)
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)  # complete or absent: an interrupted training is never reused
    print(f"{path}: {why}; trained a small ViT for {steps} steps into {cached}: "
          f"eval accuracy {results['final']['eval/accuracy']:.3f}")
    return cached


def _unusable(workdir: Path) -> str | None:
    """Why ``workdir``'s latest checkpoint cannot be loaded (none there; or it fails its
    integrity check, e.g. saved by an older vit_jax), or None."""
    from vit_jax import integrity
    from vit_jax.checkpoints import CheckpointNotFoundError, locate

    try:
        directory, step = locate(workdir)  # a complete checkpoint, not just a started run
    except CheckpointNotFoundError:
        return "no trained run there"
    reason = integrity.check(directory / str(step))
    return None if reason is None else f"its step {step} is unusable ({reason})"
