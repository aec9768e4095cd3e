"""A mock ``imagenet2012``: TFDS's own ImageNet builder, prepared with generated JPEGs.

The builder is TFDS's registered ``imagenet2012`` (version, features ``image``/``label``/
``file_name``, the 1000 synset class names, splits ``train``/``validation``) with only its
example generator replaced, so the prepared folder is what ``tfds build imagenet2012`` leaves,
at a few images per split: the recipes' configs read it as they would read the real one
(``tfds:imagenet2012``, split slices like ``train[:99%]``). The suite smoke-tests the recipes on
it; anyone can try a recipe's data path with it before ImageNet is on the machine:

    python -m vit_jax.data.mock_imagenet DATA_DIR [--train=64] [--validation=16]

Images are JPEG (quality 90) of random sizes and aspect ratios, a class's colour plus noise.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from vit_jax.data.prepare import EmbeddedBuilder
from vit_jax.logs import drop_messages

NAME = "imagenet2012"
drop_messages("is not prepared")


def _builder_class(train: int, validation: int, sizes: tuple[int, int], seed: int) -> type:
    real = tfds.builder_cls(NAME)

    class MockImagenet2012(EmbeddedBuilder, real, skip_registration=True):
        name = NAME

        def _log_download_bytes(self) -> None:  # TFDS's "downloading ... unknown size"
            print(f"Writing a mock {NAME} to {self.data_dir}", flush=True)

        def _log_download_done(self) -> None:
            pass

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download or extract
            return {"train": self._generate(train, seed),
                    "validation": self._generate(validation, seed + 1)}

        def _generate(self, count: int, split_seed: int):
            rng = np.random.default_rng(split_seed)
            for i in range(count):
                label = int(rng.integers(1000))
                h, w = (int(s) for s in rng.integers(sizes[0], sizes[1] + 1, 2))
                colour = np.random.default_rng(label).integers(0, 256, 3)
                pixels = np.clip(colour + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                encoded = io.BytesIO()
                Image.fromarray(pixels).save(encoded, format="JPEG", quality=90)
                name = f"{self.info.features['label'].int2str(label)}_{split_seed}_{i}.JPEG"
                yield name, {"image": encoded.getvalue(), "label": label, "file_name": name}

    return MockImagenet2012


def write_mock_imagenet(data_dir: str | os.PathLike, *, train: int = 64, validation: int = 16,
                        sizes: tuple[int, int] = (48, 160), seed: int = 0) -> str:
    """Prepares the mock in ``data_dir`` (array_record, as TFDS prepares the real one); returns
    the dataset's folder. An existing preparation is kept."""
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    builder = _builder_class(train, validation, sizes, seed)(data_dir=data_dir,
                                                             file_format="array_record")
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare()
    return builder.data_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit_jax.data.mock_imagenet",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", help="the TFDS data_dir to prepare it in")
    p.add_argument("--train", type=int, default=64, help="training images (default 64)")
    p.add_argument("--validation", type=int, default=16, help="validation images (default 16)")
    args = p.parse_args(argv)
    if args.train < 1 or args.validation < 1:
        p.error("--train and --validation must be at least 1")
    where = write_mock_imagenet(args.data_dir, train=args.train, validation=args.validation)
    print(f"mock imagenet2012 ({args.train} train, {args.validation} validation images) in "
          f"{where}; use --config.data.data_dir={os.path.abspath(args.data_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
