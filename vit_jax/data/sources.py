"""Config -> the examples of one split: embedded TFDS builders, user TFDS data, image folders."""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import tensorflow_datasets as tfds

from vit_jax.data.config import EMBEDDED, DataConfig
from vit_jax.data.corrupt import drop_corrupt
from vit_jax.data.digits import Digits
from vit_jax.data.errors import DataError
from vit_jax.data.folder import FolderRecords, list_classes
from vit_jax.data.mnist import MnistIdx, mnist_config
from vit_jax.data.prepare import prepared_builder
from vit_jax.data.records import Records, Subset, TfdsRecords
from vit_jax.data.shapes import Shapes, shapes_config


@dataclasses.dataclass(frozen=True)
class Split:
    name: str  # e.g. "shapes/train", for messages.
    records: Records
    num_classes: int
    class_names: tuple[str, ...] | None
    skipped: tuple[str, ...] = ()  # Unreadable examples dropped by skip_corrupt.


def load_split(cfg: DataConfig, split: str, *, subset: int | None = None) -> Split:
    """The examples of `split`; `subset` keeps the deterministic first N of them."""
    if cfg.name == "folder":
        classes = list_classes(cfg.root, cfg.train_split)
        records = FolderRecords(cfg.root, split, classes)
        loaded = Split(f"{cfg.root}/{split}", records, len(classes), tuple(classes))
    elif cfg.name == "digits":
        loaded = _tfds_split(prepared_builder(Digits, data_dir=cfg.data_dir), split, cfg)
    elif cfg.name == "mnist":
        loaded = _tfds_split(prepared_builder(MnistIdx, config=mnist_config(cfg.data_dir)),
                             split, cfg)
    elif cfg.name == "shapes":
        config = shapes_config(**cfg.shapes)
        builder = prepared_builder(Shapes, data_dir=cfg.data_dir, config=config)
        loaded = _tfds_split(builder, split, cfg)
    else:
        builder = _user_builder(cfg.name.removeprefix("tfds:"), cfg.data_dir)
        loaded = _tfds_split(builder, split, cfg)
    if cfg.skip_corrupt and cfg.name not in (*EMBEDDED, "mnist"):  # ours are known to be good
        records = loaded.records
        # Folder files can change between calls: key the cached scan on their sizes and mtimes.
        key = (
            records.signature()
            if isinstance(records, FolderRecords)
            else (cfg.data_dir, loaded.name)
        )
        records, skipped = drop_corrupt(records, key)
        loaded = dataclasses.replace(loaded, records=records, skipped=skipped)
    if subset is not None:
        if subset > len(loaded.records):
            raise DataError(
                f"train_subset={subset} exceeds the {len(loaded.records)} examples of "
                f"{loaded.name}; use at most {len(loaded.records)} or None"
            )
        loaded = dataclasses.replace(loaded, records=Subset(loaded.records, range(subset)))
    return loaded


def class_names(cfg: DataConfig) -> tuple[str, ...] | None:
    """The dataset's class names, label by label (as `DatasetInfo.class_names`), without
    scanning its files: a folder's class directories, a TFDS label feature's names."""
    if cfg.name == "folder":
        return tuple(list_classes(cfg.root, cfg.train_split))
    plain = dataclasses.replace(cfg, skip_corrupt=False)  # no corrupt-file scan for names
    return load_split(plain, plain.train_split).class_names


def _user_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """A dataset someone already prepared; we never download or generate it."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except Exception as e:  # TFDS raises many types here (not found, bad name, bad config).
        prepared, error = False, f"{type(e).__name__}: {e}"
    else:
        error = f"it is not prepared in {builder.data_dir}"
    if not prepared:
        where = data_dir or "TFDS's default data_dir"
        raise DataError(
            f"TFDS dataset {name!r} is not available in {where} ({error}). Datasets prepared "
            f"there: {prepared_datasets(data_dir) or 'none'}. Prepare it there first (as "
            f"array_record) or set data_dir to where it is."
        )
    return builder


def prepared_datasets(data_dir: str | None) -> list[str]:
    """`name[/config]:version` of every dataset prepared under `data_dir`."""
    data_dir = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
    found = []
    for pattern in ("*/*/dataset_info.json", "*/*/*/dataset_info.json"):
        for path in glob.glob(os.path.join(data_dir, pattern)):
            *name, version = os.path.relpath(os.path.dirname(path), data_dir).split(os.sep)
            found.append(f"{'/'.join(name)}:{version}")
    return sorted(found)


def _tfds_split(builder: tfds.core.DatasetBuilder, split: str, cfg: DataConfig) -> Split:
    image_key, label_key = cfg.image_key, cfg.label_key
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise DataError(
                f"{builder.info.full_name} has no feature {key!r}; features: {sorted(features)}. "
                f"Set image_key / label_key."
            )
    label = features[label_key]
    if not isinstance(label, tfds.features.ClassLabel):
        raise DataError(f"{builder.info.full_name}: feature {label_key!r} is not a ClassLabel")
    decoders = None
    if isinstance(features[image_key], tfds.features.Image):
        # Keep images encoded: the pp `decode` op decodes them, in the grain workers.
        decoders = {image_key: tfds.decode.SkipDecoding()}
    splits = sorted(builder.info.splits)
    if any(re.sub(r"\[.*\]$", "", s.strip()) not in splits for s in split.split("+")):
        raise DataError(
            f"cannot read split {split!r} of {builder.info.full_name}; splits: {splits}"
        )
    try:
        source = builder.as_data_source(split=split, decoders=decoders)
    except Exception as e:
        raise DataError(
            f"cannot read split {split!r} of {builder.info.full_name} ({type(e).__name__}: {e}); "
            f"random access needs the dataset prepared with file_format='array_record'"
        ) from e
    where = f"{builder.info.full_name}/{split}"
    return Split(
        name=where,
        records=TfdsRecords(source, where, image_key, label_key),
        num_classes=label.num_classes,
        class_names=tuple(label.names),
    )
