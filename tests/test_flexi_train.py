"""FlexiViT training (``model.flexi_patch_sizes``): one model trained at a random patch size
each step, evaluated at every size; the step's forward equals the PI-resized model's, the draws
are a function of (seed, step), and a preempted run resumes bitwise."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_config
from tests.test_train import assert_same_checkpoint
from vit_jax import load_model
from vit_jax.config import validate
from vit_jax.models import create_model
from vit_jax.models.flexi import change_patch_size, patch_size_at
from vit_jax.train import train_and_evaluate


def flexi_config(**changes):
    c = tiny_config(**{"model.flexi_patch_sizes": (8, 4, 2), **changes})
    for p in (8, 4, 2):
        c.evals[f"eval_p{p}"] = {"kind": "classification", "patch_size": p}
    return c


@pytest.mark.parametrize("posemb", ["learn", "sincos2d"])
@pytest.mark.parametrize("patch", [2, 8])
def test_a_flexi_forward_is_the_pi_resized_model(posemb, patch):
    model = create_model("mu/4", num_classes=10, image_size=8, in_channels=1, width=32,
                         depth=2, num_heads=2, mlp_dim=64, posemb=posemb, head_zero_init=False)
    images = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    want = change_patch_size(model, patch)(images)
    np.testing.assert_allclose(model(images, patch_size=patch), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model(images, patch_size=4), model(images))


def test_gradients_reach_the_underlying_kernel_through_the_resize():
    model = create_model("mu/4", num_classes=10, image_size=8, in_channels=1, width=32,
                         depth=2, num_heads=2, mlp_dim=64, head_zero_init=False)
    images = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))

    def loss(m, patch):
        return m(images, patch_size=patch).sum()

    grads = {p: nnx.grad(loss)(model, p).patch_embed.kernel[...] for p in (2, 4, 8)}
    assert all(g.shape == (4, 4, 1, 32) for g in grads.values())  # the one underlying kernel
    assert all(float(jnp.abs(g).max()) > 0 for g in grads.values())
    assert float(jnp.abs(grads[2] - grads[8]).max()) > 0


def test_patch_size_draws_follow_the_weights_and_depend_only_on_seed_and_step():
    draws = [patch_size_at(s, (8, 4, 2), (1, 2, 1), seed=0) for s in range(1, 4001)]
    share = {p: n / len(draws) for p, n in collections.Counter(draws).items()}
    assert share[4] == pytest.approx(0.5, abs=0.03) and share[8] == pytest.approx(0.25, abs=0.03)
    assert draws[99] == patch_size_at(100, (8, 4, 2), (1, 2, 1), seed=0)
    other = [patch_size_at(s, (8, 4, 2), (1, 2, 1), seed=1) for s in range(1, 4001)]
    assert draws != other


def test_flexi_training_learns_every_patch_size_and_resumes_bitwise(tmp_path, monkeypatch,
                                                                    capsys):
    cfg = {"total_steps": 120, "eval_every_steps": 60, "checkpoint_every_steps": 60}
    results = train_and_evaluate(flexi_config(**cfg), tmp_path / "whole")
    final = results["final"]
    for p in (8, 4, 2):  # chance is 10%, ln(10) = 2.30; each size gets ~40 of the 120 steps
        assert final[f"eval_p{p}/accuracy"] > 0.2 and final[f"eval_p{p}/loss"] < 2.15, (p, final)
    assert final["eval/accuracy"] == final["eval_p4/accuracy"]  # the model's own patch: 4
    loaded = load_model(tmp_path / "whole", verbose=False)  # the checkpoint keeps its sizes
    assert loaded.flexi_patch_sizes == (8, 4, 2) and loaded.flexi_weights == ()
    calls = iter(range(1, 1000))
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: next(calls) == 31)
    train_and_evaluate(flexi_config(**cfg), tmp_path / "split")
    assert "Preempted: saved step 31" in capsys.readouterr().out
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: False)
    train_and_evaluate(flexi_config(**cfg), tmp_path / "split")
    assert_same_checkpoint(tmp_path / "split", tmp_path / "whole", 120, flexi_config(**cfg))


@pytest.mark.parametrize("changes, message", [
    ({"model.flexi_patch_sizes": (8, 3)}, "3 does not divide the image size 8x8"),
    ({"model.flexi_patch_sizes": (8, 8)}, "repeats a size"),
    ({"model.flexi_patch_sizes": (8, 4), "model.flexi_weights": (1.0,)},
     "one number > 0 per patch size"),
    ({"model.flexi_patch_sizes": (8, 4), "model.flexi_weights": (1.0, 0.0)},
     "one number > 0 per patch size"),
])
def test_bad_flexi_options_fail_before_any_work(changes, message):
    with pytest.raises(ValueError, match=message):
        validate(tiny_config(**changes))


def test_an_eval_patch_size_must_divide_the_image():
    c = tiny_config()
    c.evals["eval_p3"] = {"kind": "classification", "patch_size": 3}
    with pytest.raises(ValueError, match=r"eval_p3.patch_size=3 does not divide the image"):
        validate(c)
