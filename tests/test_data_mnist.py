"""`data.name="mnist"`: a folder of the four IDX files -> TFDS -> array_record -> grain.

The suite writes its own small IDX files (never the real MNIST, which it must not need)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vit_jax import data
from vit_jax.data.errors import DataError
from vit_jax.data.mnist import FILES, write_idx
from vit_jax.data.prepare import ENV_DATA_DIR
from vit_jax.data.sources import load_split

COUNTS = {"train": 60, "test": 20}
PP = "decode(1)|value_range(0,1)|onehot(10)"


def make_mnist_folder(folder, seed: int = 0, compress=(True, False, True, False)):
    """Random 28x28 'digits' with labels 0-9, the files a mix of .gz and plain."""
    rng = np.random.default_rng(seed)
    arrays = {}
    names = [n for pair in FILES.values() for n in pair]
    for split, (images_name, labels_name) in FILES.items():
        n = COUNTS[split]
        arrays[split] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                         rng.integers(0, 10, n).astype(np.uint8))
        for name, array in zip((images_name, labels_name), arrays[split], strict=True):
            gz = ".gz" if compress[names.index(name)] else ""
            write_idx(os.path.join(folder, name + gz), array)
    return arrays


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def cfg(folder, **kw):
    return dict(name="mnist", data_dir=str(folder), pp_train=PP, pp_eval=PP, **kw)


def test_idx_files_prepare_into_the_cache_with_exact_pixels_and_labels(tmp_path, cache):
    folder = tmp_path / "idx"
    folder.mkdir()
    arrays = make_mnist_folder(str(folder))
    before = sorted(os.listdir(folder))
    os.chmod(folder, 0o555)  # the source may be read-only: nothing is written next to it
    try:
        info = data.dataset_info(cfg(folder))
        assert (info.num_classes, info.num_train, info.num_eval) == (10, 60, 20)
        assert info.image_shape == (28, 28, 1)
        for split, (images, labels) in arrays.items():
            records = load_split(data.resolve(cfg(folder)), split).records
            decode = data.build_pp("decode(1)")
            got = np.stack([decode(records[i])["image"][..., 0] for i in range(len(records))])
            np.testing.assert_array_equal(got, images)
            np.testing.assert_array_equal([records[i]["label"] for i in range(len(records))],
                                          labels)
        assert sorted(os.listdir(folder)) == before
        assert (cache / "mnist_idx").is_dir()
        batch = next(data.build_train_iterator(cfg(folder), batch_size=8, seed=0))
        assert batch["image"].shape == (8, 28, 28, 1) and batch["labels"].shape == (8, 10)
    finally:
        os.chmod(folder, 0o755)


def test_other_contents_prepare_apart(tmp_path, cache):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    make_mnist_folder(str(a), seed=1)
    make_mnist_folder(str(b), seed=2)
    name_a = load_split(data.resolve(cfg(a)), "train").name
    name_b = load_split(data.resolve(cfg(b)), "train").name
    assert name_a != name_b and name_a.startswith("mnist_idx/idx_")


def test_missing_and_broken_files_are_named_before_any_work(tmp_path, cache):
    with pytest.raises(DataError, match=r"needs data.data_dir="):
        data.resolve(dict(name="mnist"))
    with pytest.raises(DataError, match=r"no such directory"):
        data.resolve(cfg(tmp_path / "nowhere"))
    folder = tmp_path / "idx"
    folder.mkdir()
    make_mnist_folder(str(folder))
    os.remove(folder / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match=r"lacks the MNIST IDX file\(s\) "
                                        r"t10k-labels-idx1-ubyte\[\.gz\] \(gzip"):
        data.resolve(cfg(folder))
    # A truncated file: found, but preparing it names the file and what is wrong.
    write_idx(str(folder / "t10k-labels-idx1-ubyte"), np.zeros(20, np.uint8))
    with open(folder / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.truncate(12)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 4 bytes of data, but its "
                                        r"header says \(20,\)"):
        load_split(data.resolve(cfg(folder)), "test")
    assert not list((cache / "mnist_idx").glob("*/*/dataset_info.json"))  # nothing half-made


def test_make_mnist_idx_script_writes_a_folder_the_dataset_reads(tmp_path, cache):
    """scripts/make_mnist_idx.py: the embedded digits at 28x28 in MNIST's file format (what the
    README uses to try configs/mnist.py offline); it never overwrites existing files."""
    script = Path(__file__).parent.parent / "scripts" / "make_mnist_idx.py"
    folder = tmp_path / "mnist"
    done = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    info = data.dataset_info(cfg(folder))
    assert (info.num_train, info.num_eval, info.image_shape) == (1500, 297, (28, 28, 1))
    again = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True,
                           text=True)
    assert again.returncode == 1 and "already holds" in again.stderr
