"""Sweeps: many training runs from one config, measured and tabulated.

  python -m vit_jax.sweep --config=configs/sweeps/patch_size.py --workdir=runs/sweeps/patch_size

A sweep config (``configs/sweeps/*.py``) returns ``base`` (a full experiment config) and
``points`` (flat deltas like ``{"model.patch_size": 8}``); ``runner`` trains every point in its
own workdir (resumable, failures recorded), ``measure`` adds parameters / tokens / FLOPs /
memory / throughput, ``report`` writes results.{json,csv,md} and plots. ``resolution`` is the
special sweep that evaluates one checkpoint at other resolutions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections as mlc


def load_config(path: str | Path, arg: str | None = None) -> mlc.ConfigDict:
    """``get_config(arg)`` of an experiment config file, so sweeps reuse the shipped configs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file {path}")
    spec = importlib.util.spec_from_file_location(f"_vit_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def flatten(tree, prefix: str = "") -> dict:
    """``{"optim": {"lr": 0.1}}`` (dict or ConfigDict) -> ``{"optim.lr": 0.1}``."""
    tree = tree.to_dict() if isinstance(tree, mlc.ConfigDict) else tree
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def __getattr__(name: str):  # the runner imports jax and the trainer: only when used
    if name in ("expand_points", "point_name", "run_sweep"):
        from vit_jax.sweep import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'vit_jax.sweep' has no attribute {name!r}")


__all__ = ["expand_points", "flatten", "load_config", "point_name", "run_sweep"]
