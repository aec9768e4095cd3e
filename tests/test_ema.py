"""The weight average (optim.ema_decay): its arithmetic, training beside the raw weights, exact
resume, loading it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_config
from tests.test_train import assert_same_checkpoint
from vit_jax import ema, load_model, load_predictor, optim
from vit_jax.checkpoints import read_model
from vit_jax.train import train_and_evaluate
from vit_jax.tree import flatten


def _linear_and_optimizer(decay):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = optim.build_tx(dict(name="sgd", lr=0.5, momentum=0.0, schedule="constant",
                             ema_decay=decay))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def test_average_is_the_first_params_then_the_decayed_mean_of_every_step():
    model, optimizer = _linear_and_optimizer(0.75)
    x = jnp.asarray([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]])
    trained = []
    for _ in range(4):
        grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
        optimizer.update(model, grads)
        trained.append(np.asarray(model.kernel[...]))
    expected = trained[0]  # step 1 copies, then avg = 0.75 avg + 0.25 new
    for kernel in trained[1:]:
        expected = 0.75 * expected + 0.25 * kernel
    average = ema.find(nnx.state(optimizer))
    np.testing.assert_allclose(average["kernel"][...], expected, rtol=1e-6)
    assert not np.allclose(expected, trained[-1], atol=1e-3)  # it really lags the weights
    assert int(nnx.to_pure_dict(nnx.state(optimizer))["opt_state"][1]["ema_count"]) == 4


def test_no_decay_means_no_average_in_the_state():
    _, optimizer = _linear_and_optimizer(None)
    assert ema.find(nnx.state(optimizer)) is None


@pytest.mark.parametrize("decay", [1.0, 0.0, -0.5, "0.9"])
def test_decay_out_of_range_is_a_one_line_error(decay):
    with pytest.raises(ValueError, match=r"optim\.ema_decay=.* must be a number in \(0, 1\)"):
        optim.resolve({"ema_decay": decay})


def test_swapped_state_has_the_average_as_its_model_and_keeps_the_raw_one():
    model, optimizer = _linear_and_optimizer(0.5)
    for _ in range(3):
        optimizer.update(model, nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3))) ** 2))(model))
    state = nnx.state((model, optimizer))
    swapped = ema.with_ema_weights(state)
    assert jax.tree.structure(swapped) == jax.tree.structure(state)
    np.testing.assert_array_equal(swapped[0]["kernel"][...],
                                  ema.find(state[1])["kernel"][...])
    np.testing.assert_array_equal(state[0]["kernel"][...], model.kernel[...])
    assert not np.array_equal(swapped[0]["kernel"][...], state[0]["kernel"][...])


def test_metric_names_of_the_average():
    assert ema.rename({"eval/accuracy": 1, "fewshot/5shot": 2}, "eval") == {
        "eval_ema/accuracy": 1, "fewshot/5shot_ema": 2}


def test_training_evaluates_the_average_beside_the_weights_and_resumes_it_bitwise(
        tmp_path, monkeypatch, capsys):
    cfg = {"optim.ema_decay": 0.9, "total_steps": 24, "eval_every_steps": 12}
    calls = iter(range(1, 1000))
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: next(calls) == 10)
    train_and_evaluate(tiny_config(**cfg), tmp_path / "split")
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: False)
    train_and_evaluate(tiny_config(**cfg), tmp_path / "split")
    results = train_and_evaluate(tiny_config(**cfg), tmp_path / "whole")
    final = results["final"]
    assert {"eval/accuracy", "eval/loss", "eval_ema/accuracy", "eval_ema/loss"} <= set(final)
    assert final["eval_ema/loss"] != final["eval/loss"]
    assert "eval_ema/accuracy" in capsys.readouterr().out
    # the average (in the optimizer state) resumes bit for bit, with everything else
    assert_same_checkpoint(tmp_path / "split", tmp_path / "whole", 24, tiny_config(**cfg))

    raw = flatten(read_model(tmp_path / "whole")[0])
    averaged, _, description = read_model(tmp_path / "whole", weights="ema")
    averaged = flatten(averaged)
    assert "weight average" in description and averaged.keys() == raw.keys()
    assert not np.array_equal(averaged["head/kernel"], raw["head/kernel"])
    loaded = load_model(tmp_path / "whole", weights="ema", verbose=False)
    np.testing.assert_array_equal(loaded.head.kernel[...], averaged["head/kernel"])
    assert final["eval_ema/loss"] < 2.3  # it learned (chance: ln 10)
    image = np.zeros((8, 8), np.uint8)
    top = load_predictor(tmp_path / "whole", weights="ema", top_k=10)([image])[0]
    assert len(top) == 10 and abs(sum(p.probability for p in top) - 1) < 1e-5


def test_loading_the_average_of_a_run_without_one_says_how_to_load_it(tmp_path):
    train_and_evaluate(tiny_config(total_steps=6), tmp_path)
    with pytest.raises(ValueError, match=r"keeps no weight average \(trained without "
                       r"optim\.ema_decay\); load weights='raw'"):
        load_model(tmp_path, weights="ema", verbose=False)
    with pytest.raises(ValueError, match=r"weights='best'; valid: raw, ema"):
        load_model(tmp_path, weights="best", verbose=False)


def test_the_average_follows_the_final_update_after_the_lr_factors():
    tx = optim.build_tx(dict(name="sgd", lr=1.0, momentum=0.0, schedule="constant",
                             ema_decay=0.9, lr_mults=(("head/.*", 0.25),)))
    params = {"head": {"kernel": jnp.ones((2, 2))}, "norm": {"scale": jnp.ones(2)}}
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    average = ema.find(state)  # the first step copies the updated parameters
    np.testing.assert_array_equal(average["head"]["kernel"], np.full((2, 2), 0.75))
    np.testing.assert_array_equal(average["norm"]["scale"], np.zeros(2))
