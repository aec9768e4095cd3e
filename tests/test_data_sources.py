"""User data: image folders (incl. corrupt files) and TFDS datasets prepared by someone else."""

import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vit_jax import data
from vit_jax.data.prepare import EmbeddedBuilder
from vit_jax.data.sources import prepared_datasets

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}  # Sorted: labels 0,1,2.
PP = "decode|resize(8)|to_rgb|value_range(0,1)|onehot(3)"


def make_folder(root, counts):
    """root/<split>/<colour>/<i>.png|jpg: noisy images dominated by the class colour."""
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for name, colour in COLOURS.items():
            os.makedirs(os.path.join(root, split, name))
            for i in range(n):
                size = (int(rng.integers(10, 20)), int(rng.integers(10, 20)))
                noise = rng.integers(0, 60, size + (3,))
                image = np.clip(np.array(colour) * 0.8 + noise, 0, 255).astype(np.uint8)
                ext = "jpg" if i % 3 == 0 else "png"
                Image.fromarray(image).save(os.path.join(root, split, name, f"{i}.{ext}"))
    return str(root)


@pytest.fixture
def folder(tmp_path):
    root = make_folder(tmp_path / "images", {"train": 7, "test": 4})
    return dict(name="folder", root=root, pp_train=PP, pp_eval=PP)


def test_image_folder(folder):
    info = data.dataset_info(folder)
    assert info.class_names == ("blue", "green", "red")
    assert (info.num_classes, info.num_train, info.num_eval) == (3, 21, 12)
    assert info.image_shape == (8, 8, 3) and info.num_skipped == 0
    batch = next(data.build_train_iterator(folder, batch_size=21, seed=0))
    assert sorted(batch["label"].tolist()) == [0] * 7 + [1] * 7 + [2] * 7
    dominant = batch["image"].mean(axis=(1, 2)).argmax(1)  # 0=R, 1=G, 2=B.
    np.testing.assert_array_equal(dominant, np.array([2, 1, 0])[batch["label"]])
    seen = []
    for batch in data.build_eval_iterator(folder, batch_size=5):
        seen.extend(batch["index"][batch["mask"]].tolist())
    assert sorted(seen) == list(range(12))


WNIDS = ("n01440764", "n01443537", "n02085620", "n04592741")  # sorted: the synsets' order


def test_imagenet_folder_layout_wnid_classes_uppercase_jpeg_and_a_val_split(tmp_path):
    """``train/<wnid>/<wnid>_<n>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<n>.JPEG``, as the
    ILSVRC tarballs unpack (the validation images moved into class folders)."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for label, wnid in enumerate(WNIDS):
            folder_dir = tmp_path / "imagenet" / split / wnid
            folder_dir.mkdir(parents=True)
            for i in range(per_class):
                noise = rng.integers(0, 5, (12, 16, 3), dtype=np.uint8)
                pixels = np.full((12, 16, 3), 60 * label, np.uint8) + noise
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{label}{i}.JPEG"
                Image.fromarray(pixels).save(folder_dir / name, format="JPEG", quality=95)
    (tmp_path / "imagenet" / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    pp = "decode|value_range(0,1)|onehot(4)"
    config = dict(name="folder", root=str(tmp_path / "imagenet"), eval_split="val", pp_train=pp,
                  pp_eval=pp)
    info = data.dataset_info(config)
    assert info.class_names == WNIDS and (info.num_train, info.num_eval) == (12, 8)
    labels, means = [], []
    for batch in data.build_eval_iterator(config, batch_size=8):
        labels += batch["label"].tolist()
        means += batch["image"].mean(axis=(1, 2, 3)).tolist()
    assert sorted(labels) == [0, 0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_allclose(np.array(means) * 255, 60 * np.array(labels) + 2, atol=3)


def test_a_folder_listed_once_is_listed_again_when_a_file_is_added(folder):
    from vit_jax.data.folder import FolderRecords

    records = FolderRecords(folder["root"], "train", ["blue", "green", "red"])
    again = FolderRecords(folder["root"], "train", ["blue", "green", "red"])
    assert again.paths is records.paths  # one listing for the run's several openings
    Image.new("RGB", (10, 10)).save(os.path.join(folder["root"], "train", "red", "new.png"))
    grown = FolderRecords(folder["root"], "train", ["blue", "green", "red"])
    assert len(grown) == len(records) + 1


def test_folder_subset_spans_classes(folder):
    batch = next(data.build_train_iterator(dict(folder, train_subset=9), batch_size=9, seed=0))
    assert len(set(batch["label"].tolist())) == 3  # Files are stored in a shuffled order.


def test_corrupt_image_error_names_the_file(folder):
    bad = os.path.join(folder["root"], "test", "green", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(data.DataError, match=re.escape(bad)):
        for _ in data.build_eval_iterator(folder, batch_size=4):
            pass


def test_skip_corrupt_counts_and_skips(folder):
    bad = os.path.join(folder["root"], "train", "red", "truncated.png")
    with open(os.path.join(folder["root"], "train", "red", "1.png"), "rb") as f:
        head = f.read()[:60]
    with open(bad, "wb") as f:
        f.write(head)  # A truncated PNG.
    config = dict(folder, skip_corrupt=True)
    info = data.dataset_info(config)
    assert info.num_skipped == 1 and info.skipped == (bad,)
    assert info.num_train == 21
    batches = [next(data.build_train_iterator(config, batch_size=21, seed=1))]
    assert sorted(batches[0]["label"].tolist()) == [0] * 7 + [1] * 7 + [2] * 7
    with pytest.raises(data.DataError, match=re.escape(bad)):
        take_epoch = data.build_train_iterator(dict(folder), batch_size=22, seed=1)
        next(take_epoch)


def test_folder_errors(tmp_path, folder):
    with pytest.raises(data.DataError, match="splits found: \\['test', 'train'\\]"):
        data.dataset_info(dict(folder, eval_split="validation"))
    os.makedirs(os.path.join(folder["root"], "test", "purple"))
    with pytest.raises(data.DataError, match="class 'purple' .* is not a class of the training"):
        data.dataset_info(folder)
    with pytest.raises(data.DataError, match="needs root="):
        data.dataset_info(dict(name="folder"))


class UserToy(EmbeddedBuilder, skip_registration=True):
    """Stands in for a dataset a user prepared with their own (unregistered) builder."""

    VERSION = tfds.core.Version("2.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "img": tfds.features.Image(shape=(6, 6, 3), encoding_format="png"),
                    "y": tfds.features.ClassLabel(num_classes=4),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12), "validation": self._generate_examples(5)}

    def _generate_examples(self, n):
        for i in range(n):
            image = np.full((6, 6, 3), 40 * (i % 4), np.uint8)
            yield i, {"img": Image.fromarray(image), "y": i % 4}


def test_user_tfds_dataset(tmp_path):
    data_dir = str(tmp_path / "tfds")
    UserToy(data_dir=data_dir, file_format="array_record").download_and_prepare()
    config = dict(
        name="tfds:user_toy",
        data_dir=data_dir,
        eval_split="validation",
        image_key="img",
        label_key="y",
        pp_train="decode|value_range(0,1)|onehot(4)",
        pp_eval="decode|value_range(0,1)|onehot(4)",
    )
    info = data.dataset_info(config)
    assert (info.num_classes, info.num_train, info.num_eval) == (4, 12, 5)
    assert info.image_shape == (6, 6, 3)
    batch = next(data.build_eval_iterator(config, batch_size=5))
    for image, label in zip(batch["image"], batch["label"], strict=True):
        np.testing.assert_allclose(image, 40 * label / 255, rtol=1e-6)
    assert prepared_datasets(data_dir) == ["user_toy:2.0.0"]
    with pytest.raises(data.DataError, match="Datasets prepared there: \\['user_toy:2.0.0'\\]"):
        data.dataset_info(dict(config, name="tfds:mnist"))
    with pytest.raises(data.DataError, match="no feature 'image'; features: \\['img', 'y'\\]"):
        data.dataset_info(dict(config, image_key="image"))
    with pytest.raises(data.DataError, match="cannot read split 'test'.*splits: \\['train'"):
        data.dataset_info(dict(config, eval_split="test"))
