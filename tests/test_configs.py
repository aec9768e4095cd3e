"""Every shipped config is exercised, so none can go stale (big_vision's lesson)."""

import importlib.util
from pathlib import Path

import pytest
from flax import nnx

from vit_jax import count_params
from vit_jax.config import build_model, validate
from vit_jax.data import DataError
from vit_jax.train import train_and_evaluate

CONFIGS = Path(__file__).parent.parent / "configs"
# (file, arg) pairs: each config with each argument its docstring advertises.
SHIPPED = [("quickstart", None), ("mnist", "/nonexistent"), ("mnist_folder", "/nonexistent"),
           ("small_data", "vit"), ("small_data", "SmallResNet,mnist:/nonexistent"),
           ("small_data", "SimpleCNN"), ("small_data", "SmallResNet"), ("cifar10", None),
           ("cifar10", "Ti/4"),           ("imagenet_vit", "B/16"), ("imagenet_vit", "S/16,300"),
           ("finetune", None), ("flexivit", None), ("navit", None)]


def load(name: str, arg=None):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.lock()
    return config


def test_every_config_file_is_listed():
    assert {p.stem for p in CONFIGS.glob("*.py")} == {name for name, _ in SHIPPED}


@pytest.mark.parametrize("name,arg", SHIPPED)
def test_config_model_builds(name, arg):
    config = load(name, arg)
    num_classes = 1000 if name == "imagenet_vit" else 10
    model = nnx.eval_shape(lambda: build_model(config, num_classes))
    assert count_params(model) > 100_000
    assert "Run it" not in (CONFIGS / f"{name}.py").read_text()  # noqa: SIM118
    assert "python -m vit_jax.main --config=configs/" in (CONFIGS / f"{name}.py").read_text()


@pytest.mark.parametrize("name,arg", [("cifar10", None), ("imagenet_vit", "B/16"),
                                      ("mnist", None)])
def test_user_data_configs_explain_missing_data(name, arg, tmp_path):
    config = load(name, arg)
    config.data.data_dir = str(tmp_path)
    with pytest.raises(DataError, match=r"not prepared|prepare|data_dir"):
        validate(config)


@pytest.mark.parametrize("name,arg", SHIPPED)
def test_config_trains_two_steps(name, arg, tmp_path):
    """The config's own optimizer, schedule and model options, shrunk to a tiny model and the
    embedded digits data so each runs in seconds."""
    config = load(name, arg)
    config.total_steps = 2
    config.batch_size = 16
    config.eval_batch_size = 16
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 1
    config.optim.warmup_steps = 1
    config.optim.total_steps = None
    grey = config.model.get("in_channels", 3) == 1
    pp = f"decode|resize(8)|{'' if grey else 'to_rgb|'}value_range(-1,1)|onehot(10)"
    config.data.update(name="digits", data_dir=None, workers=0, train_subset=None,
                       eval_split="test", pp_train=pp, pp_eval=pp)
    if "width" in config.model:  # a ViT: keep its options, shrink its size
        config.model.update(variant="mu/4", image_size=8, width=32, depth=1, num_heads=2,
                            mlp_dim=32)
        # FlexiViT: the patch sizes that cut an 8x8 image (one eval per size remains)
        config.model.flexi_patch_sizes = tuple(dict.fromkeys(
            min(p, 8) for p in config.model.get("flexi_patch_sizes", ())))
        for section in config.evals.values():
            if section.get("patch_size"):
                section.patch_size = min(section.patch_size, 8)
    if config.init_from:  # fine-tuning: start from a tiny pretraining run of the same model
        config.init_from = None
        train_and_evaluate(config, tmp_path / "pretrained")
        config.init_from = str(tmp_path / "pretrained")
    results = train_and_evaluate(config, tmp_path)
    assert 0.0 <= results["final"]["eval/accuracy"] <= 1.0
