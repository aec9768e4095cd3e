"""The published recipes (configs/recipes/): their hyperparameters as published, and each run
for a few steps at full size on a mock imagenet2012 with the real dataset's features and splits."""

from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_config
from vit_jax import params as params_lib
from vit_jax.config import load_config_file
from vit_jax.data.mock_imagenet import write_mock_imagenet
from vit_jax.models import create_model
from vit_jax.train import train_and_evaluate

RECIPES = Path(__file__).parent.parent / "configs" / "recipes"


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """200 train images (train[99%:] = 2 of them), 16 validation, small JPEGs."""
    data_dir = tmp_path_factory.mktemp("tfds")
    write_mock_imagenet(data_dir, train=200, validation=16, sizes=(40, 96))
    return str(data_dir)


def recipe(name, arg=None):
    return load_config_file(RECIPES / f"{name}.py", arg)


def shrink_run(config, data_dir, steps=3):
    """A few steps at the recipe's model, image size and pp, on the mock, with small batches."""
    config.data.update(data_dir=data_dir, workers=0)
    config.batch_size = config.eval_batch_size = 8
    config.total_steps = steps
    config.optim.update(warmup_steps=1, total_steps=None)
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = steps
    return config


def test_every_recipe_is_tested():
    assert {p.stem for p in RECIPES.glob("*.py")} == {"vit_s16_i1k", "finetune_384", "deit"}
    for path in RECIPES.glob("*.py"):
        assert f"python -m vit_jax.main --config=configs/recipes/{path.stem}.py" in \
            path.read_text()


@pytest.mark.parametrize("epochs, steps", [("90", 111_476), ("150", 185_794), ("300", 371_588)])
def test_vit_s16_i1k_is_big_visions_recipe(epochs, steps):
    c = recipe("vit_s16_i1k", epochs)
    assert c.total_steps == steps and c.batch_size == 1024  # epochs x 1,268,355 / 1024
    assert c.data.train_split == "train[:99%]" and c.data.mixup_alpha == 0.2
    assert c.data.pp_train.startswith("decode|inception_crop(224)|flip_lr|randaug(2, 10)|")
    assert c.data.pp_eval.startswith("decode|resize_small(256)|central_crop(224)|")
    m = c.model
    assert (m.variant, m.pool, m.posemb, m.class_token, m.representation_size,
            m.head_zero_init) == ("S/16", "gap", "sincos2d", False, 384, True)
    o = c.optim
    assert (o.name, o.lr, o.b1, o.b2, o.mu_dtype, o.schedule, o.warmup_steps,
            o.grad_clip_norm) == ("adamw", 1e-3, 0.9, 0.999, "bfloat16", "cosine", 10_000, 1.0)
    assert o.lr * o.weight_decay == pytest.approx(1e-4)  # big_vision's per-step decay
    assert set(c.evals) == {"eval", "minival", "train_eval"} and c.eval_every_steps == 2500



def test_vit_s16_i1k_defaults_to_90_epochs_and_names_a_bad_argument():
    assert recipe("vit_s16_i1k", None).total_steps == 111_476
    for bad in ("abc", "0", "-5", "1.5"):
        with pytest.raises(ValueError, match=r"positive whole number of epochs .*90, 150, 300"):
            recipe("vit_s16_i1k", bad)

def test_finetune_384_is_the_original_recipe_and_needs_a_checkpoint():
    c = recipe("finetune_384", "ckpt.npz")
    assert (c.init_from, c.model.variant, c.model.image_size, c.batch_size, c.total_steps) == \
        ("ckpt.npz", "B/16", 384, 512, 20_000)
    o = c.optim
    assert (o.name, o.momentum, o.lr, o.weight_decay, o.warmup_steps, o.grad_clip_norm) == \
        ("sgd", 0.9, 0.03, 0.0, 500, 1.0)
    assert recipe("finetune_384", "ckpt.npz,L/16").model.variant == "L/16"
    with pytest.raises(ValueError, match=r"needs the checkpoint to fine-tune: --config=configs/"
                       r"recipes/finetune_384\.py:CHECKPOINT\[,VARIANT\]"):
        recipe("finetune_384")


def test_vit_s16_i1k_model_has_big_visions_parameter_count():
    """The README runs the recipe at full size on the mock (python -m vit_jax.main, as a user
    types it); here its model is counted."""
    from vit_jax import count_params
    from vit_jax.config import build_model

    config = recipe("vit_s16_i1k")
    model = nnx.eval_shape(lambda: build_model(config, 1000))
    # timm's S/16 (22,050,664) - class token - learned positions + the 384x384 pre-logits
    assert count_params(model) == 22_122_472



@pytest.mark.parametrize("arg, variant", [(None, "S/16"), ("Ti", "Ti/16"), ("B", "B/16")])
def test_deit_is_deits_recipe(arg, variant):
    c = recipe("deit", arg)
    assert (c.model.variant, c.model.image_size, c.model.drop_path, c.model.pool,
            c.model.posemb, c.model.class_token) == (variant, 224, 0.1, "cls", "learn", True)
    assert c.batch_size == 1024 and c.total_steps == 375_341  # 300 x 1,281,167 / 1024
    d = c.data
    assert (d.train_split, d.mixup_alpha, d.cutmix_alpha, d.aug_repeats) == \
        ("train", 0.8, 1.0, 3)
    assert "inception_crop(224, area_min=8, method='bicubic')|flip_lr|randaug(2, 9, ops='timm', " \
        "mstd=0.5, increasing=True)|normalize|random_erase(0.25)|onehot(1000, " \
        "label_smoothing=0.1)" in d.pp_train
    assert d.pp_eval.startswith("decode|resize_small(256, method='bicubic')|central_crop(224)|")
    o = c.optim
    assert (o.name, o.lr, o.weight_decay, o.eps, o.schedule, o.warmup_steps, o.grad_clip_norm,
            o.ema_decay) == ("adamw", 1e-3, 0.05, 1e-8, "cosine", 6_255, None, None)
    assert o.lr * o.end_lr_factor == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="deit.py:MODEL takes one of Ti, S, B"):
        recipe("deit", "L")


def test_deit_runs_with_every_augmentation_on_mock_imagenet(imagenet_dir, tmp_path):
    """Ti/16 with DeiT's whole train pp, repeated augmentation, mixup/CutMix and stochastic
    depth: a few steps on the mock, finite losses (at 64² instead of 224², for the suite's time:
    only the crop sizes change, and 2 of the 12 blocks)."""
    config = shrink_run(recipe("deit", "Ti"), imagenet_dir)
    config.model.update(image_size=64, depth=2)
    config.data.pp_train = config.data.pp_train.replace("crop(224", "crop(64")
    config.data.pp_eval = config.data.pp_eval.replace("(256", "(73").replace("(224)", "(64)")
    config.batch_size = 24  # whole groups of 3 copies, even for mixup, over 8 devices
    results = train_and_evaluate(config, tmp_path / "run")
    assert np.isfinite(results["final"]["eval/loss"]) and results["final"]["step"] == 3

def test_finetune_384_runs_from_a_224_checkpoint_on_mock_imagenet(imagenet_dir, tmp_path, capsys):
    # like the ImageNet-21k checkpoints: a pre-logits layer the fine-tuned model drops
    pretrained = create_model("Ti/16", num_classes=21, image_size=224, representation_size=192)
    path = params_lib.save_npz(tmp_path / "ti16_i21k.npz", params_lib.architecture(pretrained),
                               params_lib.flat_params(pretrained))
    config = shrink_run(recipe("finetune_384", f"{path},Ti/16"), imagenet_dir, steps=2)
    results = train_and_evaluate(config, tmp_path / "run")
    out = capsys.readouterr().out
    assert "(grid 14x14 -> 24x24)" in out and "posemb: (1,197,192) -> (1,577,192) via zoom" in out
    assert "head: 21 -> 1000 classes" in out and "pre-logits layer dropped" in out
    assert np.isfinite(results["final"]["eval/loss"])


def test_every_recipe_option_together_learns_on_the_embedded_digits(tmp_path):
    """RandAugment, inception crop, mixup and CutMix, label smoothing, the weight average,
    layer-wise decay, bf16 first moment, a representation layer, gap + sincos2d: the eval loss
    falls from ln 10 (a zero head's) and both the weights and their average beat chance."""
    c = tiny_config(total_steps=300, eval_every_steps=300)
    c.data.pp_train = ("decode|inception_crop(8, area_min=70)|randaug(2, 5, translate=2, "
                       "cutout=2)|value_range(-1,1)|onehot(10, label_smoothing=0.1)")
    c.data.mixup_alpha, c.data.cutmix_alpha = 0.2, 1.0
    c.model.update(pool="gap", class_token=False, posemb="sincos2d", representation_size=32)
    c.optim.update(mu_dtype="bfloat16", layer_decay=0.9, ema_decay=0.9, warmup_steps=10)
    final = train_and_evaluate(c, tmp_path)["final"]
    assert final["eval/loss"] < 0.8 * np.log(10) and final["eval_ema/loss"] < 0.8 * np.log(10)
    assert final["eval/accuracy"] > 0.4 and final["eval_ema/accuracy"] > 0.4  # chance 0.1


def test_pre_logits_are_kept_or_named_when_the_head_stays(tmp_path):
    from vit_jax.config import build_model
    from vit_jax.loading import init_from_pretrained

    small = dict(image_size=16, width=32, depth=1, num_heads=2, mlp_dim=32)
    source = create_model("mu/4", num_classes=5, representation_size=32, **small)
    path = params_lib.save_npz(tmp_path / "rep.npz", params_lib.architecture(source),
                               params_lib.flat_params(source))
    config = recipe("finetune_384", f"{path},mu/4")
    config.model.update(small)
    with pytest.raises(ValueError, match=r"unexpected \(2\): pre_logits/bias, pre_logits/kernel"
                       r"[\s\S]*--config\.model\.representation_size=32"):
        init_from_pretrained(build_model(config, 5), config)  # same classes: a real mismatch
    config.model.representation_size = 32
    model = build_model(config, 5)
    init_from_pretrained(model, config)  # kept, with its head
    np.testing.assert_array_equal(model.pre_logits.kernel[...], source.pre_logits.kernel[...])
