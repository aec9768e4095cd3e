"""vit_jax.predict: a trained run classifies files, arrays and PIL images exactly as its own
evaluation did, from the library and from the command line (run from another directory)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import tiny_config
from vit_jax import data, load_model, load_predictor
from vit_jax.data.sources import load_split
from vit_jax.loading import load_config
from vit_jax.predict import Prediction, Predictor, class_names, eval_pp
from vit_jax.train import train_and_evaluate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits run (8x8 grey; pp_eval 'decode|value_range(-1,1)|onehot(10)'), checkpoints
    at steps 15 and 30, and its results."""
    workdir = tmp_path_factory.mktemp("predict") / "run"
    return workdir, train_and_evaluate(tiny_config(total_steps=30), workdir)


@pytest.fixture(scope="module")
def test_files(run, tmp_path_factory):
    """The digits test split as PNG files holding the very bytes the eval pipeline decodes, in
    split order, and their labels."""
    cfg = data.resolve(load_config(run[0]).data)
    records = load_split(cfg, cfg.eval_split).records
    folder = tmp_path_factory.mktemp("digits_test")
    files, labels = [], []
    for i in range(len(records)):
        example = records[i]
        files.append(folder / f"{i:03d}.png")
        files[-1].write_bytes(example["image"])
        labels.append(example["label"])
    return files, np.array(labels)


def eval_logits(workdir) -> np.ndarray:
    """The logits of the run's own eval pipeline (its saved data config) and model, by index."""
    model = load_model(workdir, verbose=False)
    found = {}
    for batch in data.build_eval_iterator(load_config(workdir).data, batch_size=96):
        logits = np.asarray(model(batch["image"], train=False))
        found.update((int(i), row) for i, keep, row in
                     zip(batch["index"], batch["mask"], logits, strict=True) if keep)
    return np.stack([found[i] for i in range(len(found))])


def softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_predictor_gives_the_runs_own_eval_logits_and_accuracy(run, test_files):
    workdir, results = run
    files, labels = test_files
    predictor = load_predictor(workdir, top_k=3)
    assert predictor.pp.spec == "decode|value_range(-1,1)"  # onehot dropped
    want = eval_logits(workdir)
    assert want.shape == (297, 10)
    np.testing.assert_allclose(predictor.logits(files), want, atol=1e-5)
    top = predictor(files)
    top1 = np.array([t[0].label for t in top])
    np.testing.assert_array_equal(top1, want.argmax(-1))
    # The accuracy the run reported, recomputed from the predictions.
    assert np.mean(top1 == labels) == pytest.approx(results["final"]["eval/accuracy"], abs=1e-6)
    assert all(len(t) == 3 and isinstance(t[0], Prediction) for t in top)
    assert [p.name for p in top[5]] == [str(p.label) for p in top[5]]  # digits: '0'..'9'
    probs = softmax(want[5].astype(np.float64))
    assert [p.label for p in top[5]] == list(np.argsort(-probs)[:3])
    np.testing.assert_allclose([p.probability for p in top[5]], np.sort(probs)[::-1][:3],
                               atol=1e-5)
    # Equal-size jitted batches, the last one padded: the same logits whatever the batch size.
    small = load_predictor(workdir, batch_size=7)
    np.testing.assert_allclose(small.logits(files[:23]), want[:23], atol=1e-5)  # 7+7+7+2


def test_arrays_and_pil_images_skip_only_the_byte_decoding(run, test_files):
    files = test_files[0][:12]
    predictor = load_predictor(run[0], step=15)
    want = predictor.logits(files)
    pils = [Image.open(f) for f in files]  # mode "L", 8x8
    grey = [np.asarray(p) for p in pils]  # (8, 8) uint8
    np.testing.assert_array_equal(predictor.logits(pils), want)
    np.testing.assert_array_equal(predictor.logits(grey), want)
    mixed = [(str(files[i]), pils[i], grey[i][..., None])[i % 3] for i in range(len(files))]
    np.testing.assert_array_equal(predictor.logits(mixed), want)
    # A checkpoints/<step> directory is the same run at that step; step 30 differs.
    at15 = load_predictor(run[0] / "checkpoints" / "15")
    np.testing.assert_array_equal(at15.logits(files), want)
    assert not np.allclose(load_predictor(run[0]).logits(files), want)
    assert predictor([]) == []


def test_bad_images_name_the_image_and_the_fix(run, tmp_path):
    predictor = load_predictor(run[0])
    with pytest.raises(data.DataError, match=r"image 1: 8x8x3 after the run's pp_eval "
                       r"'decode\|value_range\(-1,1\)', but the model takes 8x8x1 images"):
        predictor([np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8)])
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(big)
    with pytest.raises(data.DataError, match=f"{big}: 16x16x1 after .* takes 8x8x1"):
        predictor([big])
    with pytest.raises(data.DataError, match=r"image 0: .* dtype float32; expected uint8"):
        predictor([np.zeros((8, 8), np.float32)])
    with pytest.raises(data.DataError, match="missing.png: no such image file"):
        predictor([tmp_path / "missing.png"])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(data.DataError, match=r"bad.png: decode: cannot decode image"):
        predictor([tmp_path / "bad.png"])
    with pytest.raises(TypeError, match="pass a list of images"):
        predictor(big)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        load_predictor(run[0], top_k=0)


def test_class_names_come_from_the_dataset(run, tmp_path):
    assert class_names({"name": "digits"}) == tuple("0123456789")  # a TFDS label feature
    for name in ("cat", "dog", "emu"):
        (tmp_path / "train" / name).mkdir(parents=True)
    assert class_names({"name": "folder", "root": str(tmp_path)}) == ("cat", "dog", "emu")
    with pytest.warns(UserWarning, match="labels are shown as indices: .*gone"):
        assert class_names({"name": "folder", "root": str(tmp_path / "gone")}) is None
    model = load_model(run[0], verbose=False)
    image = [np.zeros((8, 8), np.uint8)]
    names = tuple(f"class{i}" for i in range(10))
    named = Predictor(model, eval_pp("decode|value_range(-1,1)|onehot(10)"), names, top_k=10)(
        image)[0]
    plain = Predictor(model, eval_pp("value_range(-1,1)"), None, top_k=10)(image)[0]
    assert [p.name for p in named] == [f"class{p.label}" for p in plain]
    assert [p.name for p in plain] == [str(p.label) for p in plain]
    assert sorted(p.label for p in plain) == list(range(10))
    assert sum(p.probability for p in plain) == pytest.approx(1.0, abs=1e-6)


def test_eval_pp_drops_label_ops_and_always_decodes():
    spec = "decode(channels=3)|resize_small(9)|central_crop(8)|value_range(-1,1)|onehot(10)"
    assert eval_pp(spec).spec == "decode(channels=3)|resize_small(9)|central_crop(8)|" \
                                 "value_range(-1,1)"
    assert eval_pp("resize(16)|onehot(10)").spec == "decode|resize(16)"  # dataset of arrays
    assert eval_pp("onehot(10)").spec == "decode"


def cli(*args: str, cwd: Path, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "vit_jax.predict", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_prints_one_line_per_image_with_relative_home_and_symlinked_paths(run, tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_digits_folder.py"),
                    str(tmp_path / "digits"), "--size=8"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    test = tmp_path / "digits" / "test"
    images = [test / d / sorted(os.listdir(test / d))[0] for d in ("3", "7", "0")]
    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir()
    home.mkdir()
    (home / "run").symlink_to(run[0])  # ~/run -> the workdir
    relative = [os.path.relpath(p, elsewhere) for p in images]  # ../digits/test/3/...
    out = cli("--workdir=~/run", "--step=15", "--top_k=2", *relative, cwd=elsewhere, home=home)
    assert out.returncode == 0, out.stderr
    top = load_predictor(run[0], step=15, top_k=2)(images)
    assert out.stdout.splitlines() == [
        f"{r}: {t[0].name} ({t[0].probability:.2f}), {t[1].name} ({t[1].probability:.2f})"
        for r, t in zip(relative, top, strict=True)]
    assert relative[0].startswith("..") and len(top) == 3


def test_cli_bad_input_is_one_line_each_and_exit_2_before_any_work(run, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    out = cli(f"--workdir={run[0]}", "ok.png", "missing.png", "bad.png", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "error: missing.png: no such image file",
        "error: bad.png: decode: cannot decode image: not in a format PIL reads (PNG, JPEG, "
        "BMP, GIF, TIFF, WebP, ...)"]
    (tmp_path / "stopped" / "checkpoints").mkdir(parents=True)  # stopped before its first save
    out = cli("--workdir=stopped", "ok.png", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"error: no complete checkpoint in {tmp_path / 'stopped' / 'checkpoints'} (a run "
        "stopped before its first save leaves none)"]
