"""`shapes`: the procedural dataset of `shapes_render` as a TFDS builder with parametric configs.

Every (image_size, num_train, num_test, seed) is its own BuilderConfig whose name encodes the
parameters (e.g. `size32_train10000_test2000_seed0`), so each parameter set prepares into its own
directory and different sets never collide. The name is parsed back by `get_builder_config`, so
`tfds.data_source("shapes/size32_train10000_test2000_seed0", data_dir=...)` works too.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import tensorflow_datasets as tfds

from vit_jax.data.errors import DataError
from vit_jax.data.png import encode_png
from vit_jax.data.prepare import EmbeddedBuilder, image_label_info
from vit_jax.data.shapes_render import CLASS_NAMES, render_shapes

_NAME = re.compile(r"size(\d+)_train(\d+)_test(\d+)_seed(\d+)")
_STREAMS = {"train": 0, "test": 1}


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    image_size: int = 32
    num_train: int = 10000
    num_test: int = 2000
    seed: int = 0

    def __reduce__(self):
        # Unpickle (e.g. in grain workers) to the canonical instance: TFDS compares identity.
        return shapes_config, (self.image_size, self.num_train, self.num_test, self.seed)


def shapes_config(
    image_size: int = 32, num_train: int = 10000, num_test: int = 2000, seed: int = 0
) -> ShapesConfig:
    """The config object for one parameter set (always the same object: TFDS compares identity)."""
    return _shapes_config(image_size, num_train, num_test, seed)


@functools.cache
def _shapes_config(image_size: int, num_train: int, num_test: int, seed: int) -> ShapesConfig:
    values = dict(image_size=image_size, num_train=num_train, num_test=num_test, seed=seed)
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"shapes.{key} must be a non-negative int, got {value!r}")
    if image_size < 8:
        raise DataError(f"shapes.image_size must be >= 8, got {image_size}")
    name = f"size{image_size}_train{num_train}_test{num_test}_seed{seed}"
    return ShapesConfig(name=name, description=f"Procedural shapes, {name}.", **values)


class Shapes(EmbeddedBuilder):
    """Procedural shapes; registered with TFDS as `shapes`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Six SDF-drawn shapes on cluttered backgrounds."}
    BUILDER_CONFIGS = [shapes_config()]

    @classmethod
    def get_builder_config(cls, name, version=None):
        """Accepts any parameter set spelled as a config name, not only BUILDER_CONFIGS."""
        match = _NAME.fullmatch(name)
        if match is None:
            return None
        return shapes_config(*(int(g) for g in match.groups()))

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return image_label_info(
            self, "One of six shapes (random pose and colour) on a cluttered background.",
            (size, size, 3), list(CLASS_NAMES))

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        cfg = self.builder_config
        counts = {"train": cfg.num_train, "test": cfg.num_test}
        return {split: self._generate_examples(split, n) for split, n in counts.items()}

    def _generate_examples(self, split: str, num_images: int):
        cfg = self.builder_config
        images, labels = render_shapes(num_images, cfg.image_size, cfg.seed, _STREAMS[split])
        for i in range(num_images):
            yield i, {"image": encode_png(images[i]), "label": int(labels[i])}
