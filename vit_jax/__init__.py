"""vit_jax: Vision Transformers in JAX/Flax NNX.

The model entry points are imported lazily, so grain worker processes (which import
``vit_jax.data``) do not pay for importing jax and flax.
"""

from __future__ import annotations

_LAZY = {"abstract_model": "vit_jax.models", "count_params": "vit_jax.models",
         "create_model": "vit_jax.models", "load_model": "vit_jax.loading",
         "load_predictor": "vit_jax.predict", "pack_images": "vit_jax.packing"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vit_jax' has no attribute {name!r}")
