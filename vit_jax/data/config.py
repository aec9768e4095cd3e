"""The data config: its keys, defaults and validation (one place, so errors can list them)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from vit_jax.checks import is_int, is_number
from vit_jax.data.errors import DataError
from vit_jax.paths import absolute

EMBEDDED = ("digits", "shapes")
NAME_CHOICES = ("'digits', 'shapes', 'mnist' (with data_dir=<folder of the IDX files>), "
                "'folder' (with root=...) or 'tfds:<name>' (with data_dir=...)")
SHAPES_DEFAULTS = dict(image_size=32, num_train=10000, num_test=2000, seed=0)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Validated data config. Build it with `resolve(config)` from a ConfigDict or dict."""

    name: str = "shapes"
    # TFDS data_dir; None: $VIT_JAX_DATA_DIR or ~/.cache/vit_jax/tfds. For "mnist": the folder
    # holding its four IDX files (prepared into the default one).
    data_dir: str | None = None
    root: str | None = None  # Image folder root (name="folder"): root/<split>/<class>/<image>.
    train_split: str = "train"
    eval_split: str = "test"
    pp_train: str = "decode|resize(32)|flip_lr|value_range(-1,1)|onehot(6)"
    pp_eval: str = "decode|resize(32)|value_range(-1,1)|onehot(6)"
    shapes: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(SHAPES_DEFAULTS))
    mixup_alpha: float = 0.0  # > 0 turns on batch-level mixup with Beta(alpha, alpha).
    cutmix_alpha: float = 0.0  # > 0 turns on CutMix (with mixup too: one or the other per step).
    # Repeated augmentation (DeiT; timm's --aug-repeats): each epoch shows 1/r of the examples,
    # each r times in the same global batch, augmented differently. 1 = off.
    aug_repeats: int = 1
    workers: int = 0  # grain worker processes; 0 = in-process (with one prefetch thread).
    prefetch: int = 2  # Batches buffered ahead (per worker when workers > 0).
    skip_corrupt: bool = False  # Drop (and count) unreadable images instead of raising.
    train_subset: int | None = None  # Deterministic first-N training examples.
    # NaViT packing (vit_jax.data.packed): dict(seq_len, max_images, patch_size, token_drop,
    # lookahead); empty = fixed-size batches.
    packing: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    image_key: str = "image"  # Feature names, for user TFDS datasets.
    label_key: str = "label"


def default_config() -> ml_collections.ConfigDict:
    """All keys with their defaults, for `configs/*.py` to start from and override."""
    return ml_collections.ConfigDict(dataclasses.asdict(DataConfig()))


def resolve(config: Mapping[str, Any] | ml_collections.ConfigDict | DataConfig) -> DataConfig:
    """Validates a data config (missing keys take defaults); errors name the valid choices."""
    if isinstance(config, DataConfig):
        return config
    if isinstance(config, ml_collections.ConfigDict | ml_collections.FrozenConfigDict):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise DataError(f"data config must be a ConfigDict or dict, got {type(config).__name__}")
    valid = [f.name for f in dataclasses.fields(DataConfig)]
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise DataError(f"unknown data config keys {unknown}; valid keys: {valid}")
    values = dict(config)
    shapes = dict(values.get("shapes") or {})
    unknown = sorted(set(shapes) - set(SHAPES_DEFAULTS))
    if unknown:
        raise DataError(
            f"unknown data.shapes keys {unknown}; valid keys: {sorted(SHAPES_DEFAULTS)}"
        )
    values["shapes"] = {**SHAPES_DEFAULTS, **shapes}
    for key in ("data_dir", "root"):  # relative to where the user typed them, ~ expanded
        if isinstance(values.get(key), str) and values[key]:
            values[key] = str(absolute(values[key]))
    cfg = DataConfig(**values)
    _check(cfg)
    return cfg


def _check(cfg: DataConfig) -> None:
    name = cfg.name
    if not isinstance(name, str) or not (
        name in (*EMBEDDED, "mnist", "folder") or (name.startswith("tfds:") and len(name) > 5)
    ):
        raise DataError(f"unknown dataset name {name!r}; valid: {NAME_CHOICES}")
    if name == "mnist":
        from vit_jax.data.mnist import find_files  # imports TFDS: only when needed

        find_files(cfg.data_dir)
    if name == "folder" and not cfg.root:
        raise DataError("name='folder' needs root=<dir> holding <split>/<class>/<image files>")
    if name == "folder" and not os.path.isdir(cfg.root):
        raise DataError(f"data.root={cfg.root}: no such directory (it should hold "
                        "<split>/<class>/<image files>)")
    if not is_int(cfg.workers) or cfg.workers < 0:
        raise DataError(f"workers must be an int >= 0 (0 = in-process), got {cfg.workers!r}")
    if not is_int(cfg.prefetch) or cfg.prefetch < 0:
        raise DataError(f"prefetch must be an int >= 0, got {cfg.prefetch!r}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        value = getattr(cfg, key)
        if not is_number(value) or value < 0:
            raise DataError(f"{key} must be a number >= 0 (0 = off), got {value!r}")
    if not is_int(cfg.aug_repeats) or cfg.aug_repeats < 1:
        raise DataError(f"aug_repeats must be an int >= 1 (1 = off; DeiT uses 3), got "
                        f"{cfg.aug_repeats!r}")
    if cfg.packing:
        from vit_jax.data.packed import resolve_packing

        resolve_packing(cfg.packing)
        if cfg.mixup_alpha or cfg.cutmix_alpha:
            raise DataError("data.packing does not combine with mixup_alpha/cutmix_alpha (they "
                            "mix whole images of equal size); set them to 0")
        if cfg.aug_repeats != 1:
            raise DataError("data.packing does not combine with aug_repeats (packed sequences "
                            "draw their images in their own order); set it to 1")
    if cfg.train_subset is not None and (not is_int(cfg.train_subset) or cfg.train_subset < 1):
        raise DataError(f"train_subset must be None or an int >= 1, got {cfg.train_subset!r}")


