"""Lazy, once-only preparation of the embedded TFDS datasets into a data_dir."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator

import tensorflow_datasets as tfds

from vit_jax.logs import drop_messages

ENV_DATA_DIR = "VIT_JAX_DATA_DIR"
# TFDS probes the version folder before the first preparation has written its metadata.
drop_messages("has no dataset_info.json")


class EmbeddedBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of builders whose data ships with installed packages or is generated: no downloads.

    TFDS looks for a download-checksums file next to the builder's code, and on a package module
    that lookup imports `importlib_resources`, which is not installed. Nothing is downloaded
    here, so there are no checksums: say so directly.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        return None

    # TFDS announces a "download" of unknown size and draws progress bars (raw control codes
    # in a log file); nothing is downloaded here, so one plain line replaces both.
    def _log_download_bytes(self) -> None:
        print(f"Preparing the embedded dataset {self.name!r} in {self.data_dir} (first use "
              "only)", flush=True)

    def _log_download_done(self) -> None:
        pass


def image_label_info(builder: tfds.core.DatasetBuilder, description: str,
                     shape: tuple[int, int, int], class_names: list[str],
                     **options) -> tfds.core.DatasetInfo:
    """The one feature layout of our builders: a PNG ``image`` and a ``label``."""
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=shape, encoding_format="png"),
            "label": tfds.features.ClassLabel(names=class_names),
        }),
        supervised_keys=("image", "label"),
        **options,
    )


def default_data_dir() -> str:
    """`$VIT_JAX_DATA_DIR`, else `~/.cache/vit_jax/tfds` (kept apart from TFDS's own default)."""
    return os.environ.get(ENV_DATA_DIR) or os.path.expanduser("~/.cache/vit_jax/tfds")


def prepared_builder(
    builder_cls: type[EmbeddedBuilder],
    *,
    data_dir: str | None = None,
    config: tfds.core.BuilderConfig | None = None,
) -> tfds.core.DatasetBuilder:
    """Returns the builder for `data_dir`, generating its array_record files on first use only.

    A file lock makes concurrent first uses (e.g. several processes of one training job on one
    host) generate once: the others wait and then read what the first one wrote.
    """
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    builder = builder_cls(data_dir=data_dir, config=config, file_format="array_record")
    if builder.is_prepared():
        return builder
    os.makedirs(data_dir, exist_ok=True)
    with _file_lock(os.path.join(data_dir, f".{builder.name}.lock")):
        builder = builder_cls(data_dir=data_dir, config=config, file_format="array_record")
        if not builder.is_prepared():
            logging.info("Preparing %s into %s (first use)", builder.info.full_name, data_dir)
            # GCS is never reachable here: do not even try.
            download_config = tfds.download.DownloadConfig(try_download_gcs=False)
            tfds.disable_progress_bar()  # see EmbeddedBuilder._log_download_bytes
            builder.download_and_prepare(download_config=download_config)
    return builder


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
