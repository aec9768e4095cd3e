"""load_model: every source gives the trained function back, and transfer changes are exact."""

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_config
from vit_jax import convert, load_model, optim
from vit_jax import params as params_lib
from vit_jax.checkpoints import Checkpointer, CheckpointNotFoundError
from vit_jax.config import build_model
from vit_jax.convert import __main__ as convert_cli
from vit_jax.models.resample import resize_grid
from vit_jax.train import train_and_evaluate
from vit_jax.train_state import optim_config

REPO = Path(__file__).resolve().parent.parent
IMAGES = np.asarray(jax.random.normal(jax.random.key(1), (4, 8, 8, 1)))
IMAGES16 = np.asarray(jax.random.normal(jax.random.key(2), (4, 16, 16, 1)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny run on digits with checkpoints at steps 15 and 30."""
    path = tmp_path_factory.mktemp("pretrained")
    train_and_evaluate(tiny_config(total_steps=30), path)
    return path


def restored_model(workdir, step):
    """The model as the training code restores it (with its optimizer)."""
    config = tiny_config(total_steps=30)
    model = build_model(config, 10)
    optimizer = nnx.Optimizer(model, optim.build_tx(optim_config(config)), wrt=nnx.Param)
    Checkpointer(workdir).restore(step, model=model, optimizer=optimizer)
    return model


def test_workdir_round_trip_gives_the_checkpoints_logits(workdir, capsys):
    model = load_model(workdir)
    assert "(step 30)" in capsys.readouterr().out
    np.testing.assert_array_equal(model(IMAGES), restored_model(workdir, 30)(IMAGES))
    assert model.image_size == (8, 8) and model.head.kernel.shape == (32, 10)
    step15 = restored_model(workdir, 15)(IMAGES)
    np.testing.assert_array_equal(load_model(workdir, step=15)(IMAGES), step15)
    np.testing.assert_array_equal(load_model(workdir / "checkpoints" / "15")(IMAGES), step15)
    assert not np.allclose(step15, model(IMAGES))


def test_new_image_size_resamples_positions_like_dynamic_resolution(workdir, capsys):
    base = load_model(workdir)
    model = load_model(workdir, image_size=16)
    out = capsys.readouterr().out
    assert "posemb: (1,5,32) -> (1,17,32) via bicubic_antialias" in out
    assert "image_size: 8x8 -> 16x16 (grid 2x2 -> 4x4)" in out
    assert model.posemb.pos_embedding.shape == (1, 17, 32)
    assert (model.image_size, model.grid, model.posemb.grid) == ((16, 16), (4, 4), (4, 4))
    np.testing.assert_allclose(model(IMAGES16), base(IMAGES16), atol=1e-6)  # base resamples
    np.testing.assert_array_equal(model.posemb.pos_embedding[:, :1],  # class row kept
                                  base.posemb.pos_embedding[:, :1])


def test_new_class_count_gets_a_zero_head(workdir, capsys):
    model = load_model(workdir, num_classes=3)
    assert "head: 10 -> 3 classes, re-initialised to zeros" in capsys.readouterr().out
    np.testing.assert_array_equal(model(IMAGES), np.zeros((4, 3)))
    base, new = params_lib.flat_params(load_model(workdir)), params_lib.flat_params(model)
    assert new["head/kernel"].shape == (32, 3) and not new["head/kernel"].any()
    for name in set(base) - {"head/kernel", "head/bias"}:
        np.testing.assert_array_equal(new[name], base[name])


def test_bigger_patches_pi_resized_keep_the_function(workdir, capsys):
    """FlexiViT: 8x8 patches of 4x4 patches upsampled 2x (bilinear, patch by patch) give the
    same tokens (the pseudo-inverse is exact when growing); the grid and the table stay."""
    model = load_model(workdir, patch_size=8, image_size=16)
    out = capsys.readouterr().out
    assert "patch: 4x4 -> 8x8 via FlexiViT PI-resize (kernel (4,4,1,32) -> (8,8,1,32))" in out
    assert "posemb" not in out and model.grid == (2, 2)
    patches = IMAGES.reshape(4, 2, 4, 2, 4, 1).transpose(0, 1, 3, 2, 4, 5)
    upsampled = resize_grid(patches, (8, 8), "bilinear").transpose(0, 1, 3, 2, 4, 5)
    upsampled = upsampled.reshape(4, 16, 16, 1)
    np.testing.assert_allclose(model(upsampled), load_model(workdir)(IMAGES), atol=2e-5)
    small = load_model(workdir, patch_size=2)  # smaller patches: a 4x4 grid at 8x8
    assert small.posemb.pos_embedding.shape == (1, 17, 32) and small(IMAGES).shape == (4, 10)


def test_checkpoint_that_does_not_fit_lists_names_and_shapes(workdir, tmp_path):
    with pytest.raises(ValueError, match=r"(?s)does not fit the model with overrides \{'depth': 3\}"
                       r".*missing \(16\): encoder/blocks/2/attn/key/bias"):
        load_model(workdir, depth=3)
    with pytest.raises(ValueError, match=r"(?s)wrong shape.*patch_embed/kernel: expected "
                       r"\(4, 4, 1, 64\), got \(4, 4, 1, 32\)"):
        load_model(workdir, width=64)
    with pytest.raises(CheckpointNotFoundError, match="not a checkpoint: expected a training"):
        load_model(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match=r"no step 7 .* steps there: \[15, 30\]"):
        load_model(workdir, step=7)


def test_converted_google_and_timm_files_load(workdir, tmp_path):
    model = load_model(workdir)
    want = model(IMAGES)
    npz = params_lib.save_npz(tmp_path / "ours.npz", params_lib.architecture(model),
                                 params_lib.flat_params(model))
    np.testing.assert_array_equal(load_model(npz)(IMAGES), want)
    timm = convert.save_timm_safetensors(model, tmp_path / "timm.safetensors")
    np.testing.assert_allclose(load_model(timm)(IMAGES), want, atol=1e-6)
    google = convert.save_google_npz(model, tmp_path / "google.npz")
    assert load_model(google).gelu_approximate  # what Google's own Flax code computed
    # This file came from an exact-GELU model: a model option says so.
    np.testing.assert_allclose(load_model(google, gelu_approximate=False)(IMAGES), want,
                               atol=1e-6)
    bigger = load_model(timm, image_size=16, num_classes=4)  # transfer from a foreign file
    assert bigger.posemb.pos_embedding.shape == (1, 17, 32) and bigger(IMAGES16).shape == (4, 4)


def test_convert_reads_a_workdir_and_load_model_its_output_directory(workdir, tmp_path, capsys):
    """convert --input=WORKDIR (or checkpoints/<step>) -> DIR; load_model(DIR) reads DIR/model.*"""
    want = load_model(workdir, step=15, verbose=False)(IMAGES)
    assert convert_cli.main([f"--input={workdir}", "--step=15", f"--output={tmp_path / 'a'}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'a' / 'model.npz'} (vit_jax;")
    assert out.endswith(f"exact GELU) from {workdir} step 15\n")
    assert convert_cli.main([f"--input={workdir / 'checkpoints' / '15'}", "--to=timm",
                         f"--output={tmp_path / 'b'}"]) == 0
    np.testing.assert_array_equal(load_model(tmp_path / "a")(IMAGES), want)
    np.testing.assert_allclose(load_model(tmp_path / "b")(IMAGES), want, atol=1e-6)
    assert convert_cli.main([f"--input={tmp_path / 'a'}", f"--output={tmp_path / 'c.npz'}"]) == 0
    np.testing.assert_array_equal(load_model(tmp_path / "c.npz")(IMAGES), want)
    (tmp_path / "b" / "model.npz").write_bytes((tmp_path / "a" / "model.npz").read_bytes())
    with pytest.raises(ValueError, match=r"b holds both model.npz and model.safetensors: pass "
                       r"the one to load"):
        load_model(tmp_path / "b")
    capsys.readouterr()
    assert convert_cli.main([f"--input={workdir}", "--gelu=exact", "--image_size=16",
                         f"--output={tmp_path / 'd'}"]) == 2
    assert ("--gelu, --image_size apply to Google and timm files; " in capsys.readouterr().err)
    assert convert_cli.main([f"--input={workdir}", "--step=7", f"--output={tmp_path / 'd'}"]) == 2
    assert r"no step 7 " in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_relative_home_and_symlinked_paths(workdir, tmp_path, monkeypatch, capsys):
    """load_model in-process, and convert as a command run from another directory."""
    want = load_model(workdir)(IMAGES)
    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir()
    home.mkdir()
    (home / "run").symlink_to(workdir)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(home))
    np.testing.assert_array_equal(load_model(os.path.relpath(workdir))(IMAGES), want)
    np.testing.assert_array_equal(load_model("~/run")(IMAGES), want)
    assert f"{workdir} (step 30)" in capsys.readouterr().out  # the real place, symlink resolved
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    for args in (["--input=~/run", "--to=timm", "--output=../exported"],  # -> DIR/model.*
                 ["--input=../exported", "--output=~/back.npz"]):
        out = subprocess.run([sys.executable, "-m", "vit_jax.convert", *args], cwd=elsewhere,
                             env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
    assert f"wrote {home / 'back.npz'} (vit_jax;" in out.stdout
    np.testing.assert_allclose(load_model("../exported")(IMAGES), want, atol=1e-6)
    np.testing.assert_allclose(load_model(home / "back.npz")(IMAGES), want, atol=1e-6)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "exported" / "model.safetensors").stat().st_mode) == \
        0o666 & ~umask


def finetune_config(init_from, **changes):
    """configs/finetune.py shrunk to the tiny pretrained model, on digits at 16x16."""
    path = Path(__file__).parent.parent / "configs" / "finetune.py"
    spec = importlib.util.spec_from_file_location("finetune", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.model.update(variant="mu/4", in_channels=1, width=32, depth=2, num_heads=2, mlp_dim=64)
    c.update(init_from=str(init_from), image_size=16, total_steps=20, batch_size=32,
             eval_batch_size=96, log_every_steps=1, eval_every_steps=20,
             checkpoint_every_steps=20)
    c.optim.update(warmup_steps=2, lr=0.03)
    c.checkpoint.async_save = False
    c.data.update(name="digits", pp_train="decode|resize(16)|value_range(-1,1)|onehot(10)",
                  pp_eval="decode|resize(16)|value_range(-1,1)|onehot(10)")
    c.update_from_flattened_dict(changes)
    return c


def test_finetune_config_starts_pretrained_and_records_the_new_resolution(workdir, tmp_path,
                                                                         capsys):
    frozen = train_and_evaluate(finetune_config(workdir, **{"optim.lr": 0.0, "total_steps": 2}),
                                tmp_path / "frozen")  # lr 0: the weights the run starts from
    out = capsys.readouterr().out
    assert "Initialised from pretrained weights" in out
    assert "posemb: (1,5,32) -> (1,17,32) via bicubic_antialias" in out
    start = params_lib.flat_params(load_model(workdir, image_size=16))
    jax.tree.map(np.testing.assert_array_equal,
                 params_lib.flat_params(load_model(tmp_path / "frozen")), start)

    config = finetune_config(workdir)
    assert config.model.image_size == 16 and "resize(16)" in config.data.pp_eval
    tuned = train_and_evaluate(config, tmp_path / "tuned")
    assert tuned["final"]["eval/accuracy"] > frozen["final"]["eval/accuracy"] + 0.1
    saved = load_model(tmp_path / "tuned")
    assert saved.image_size == (16, 16) and saved.posemb.pos_embedding.shape == (1, 17, 32)
    capsys.readouterr()
    again = train_and_evaluate(config, tmp_path / "tuned")  # a resume never re-initialises
    assert "Initialised" not in capsys.readouterr().out and again["final"]["step"] == 20


def test_finetune_architecture_mismatch_names_the_config_fix(workdir, tmp_path):
    config = finetune_config(workdir, **{"model.width": 64, "model.num_heads": 4})
    with pytest.raises(ValueError, match=r"(?s)init_from=.* does not fit config.model:.*"
                       r"set: --config.model.width=32 --config.model.num_heads=2"):
        train_and_evaluate(config, tmp_path)
