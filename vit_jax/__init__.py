"""vit_jax: Vision Transformers in JAX/Flax NNX."""

from vit_jax.models import abstract_model, count_params, create_model

__all__ = ["abstract_model", "count_params", "create_model"]
