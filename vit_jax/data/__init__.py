"""vit_jax input pipeline: embedded TFDS datasets, user data, pp strings and grain loaders.

from vit_jax import data
info = data.dataset_info(config.data)
train = data.build_train_iterator(config.data, batch_size=128, seed=0)
batch = next(train)  # {"image": (128,32,32,3) f32, "label": (128,) i32, "labels": (128,6)}
"""

from vit_jax.data.config import DataConfig, default_config, resolve
from vit_jax.data.errors import DataError
from vit_jax.data.iterator import BatchIterator
from vit_jax.data.loader import (
    DatasetInfo,
    build_eval_iterator,
    build_train_iterator,
    dataset_info,
    first_eval_batch,
)
from vit_jax.data.mixup import mix_pairs
from vit_jax.data.pp import Preprocess
from vit_jax.data.pp import build as build_pp
from vit_jax.data.registry import register as register_pp_op
from vit_jax.data.registry import valid_ops as valid_pp_ops

__all__ = [
    "BatchIterator",
    "DataConfig",
    "DataError",
    "DatasetInfo",
    "Preprocess",
    "build_eval_iterator",
    "build_pp",
    "build_train_iterator",
    "dataset_info",
    "first_eval_batch",
    "default_config",
    "mix_pairs",
    "register_pp_op",
    "resolve",
    "valid_pp_ops",
]
