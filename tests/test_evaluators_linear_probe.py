"""The linear-probe evaluator: its fit is the regularised cross-entropy minimum, it separates
what is separable and not noise, and a run reports it from its pre-logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import tiny_config
from vit_jax.config import validate
from vit_jax.evaluators.linear_probe import accuracy, fit_probe, probe_loss
from vit_jax.train import train_and_evaluate


def test_the_fit_is_the_minimum_of_the_regularised_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = rng.integers(0, 4, 300)  # labels unrelated to x: a minimum strictly inside, not at inf
    params = fit_probe(x, y, 4, l2_reg=1e-2, steps=200)
    loss = lambda p: probe_loss(p, jnp.asarray(x), jnp.asarray(y), 1e-2)  # noqa: E731
    grad = jax.grad(loss)(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad)) < 1e-4
    at_zero = loss({"w": jnp.zeros((12, 4)), "b": jnp.zeros(4)})
    assert float(loss(params)) < float(at_zero) - 0.01  # ln 4 at zero; it moved downhill
    for scale in (0.9, 1.1):  # strictly convex: scaling off the minimum costs
        assert float(loss(jax.tree.map(lambda p, s=scale: p * s, params))) > float(loss(params))


def test_separable_classes_are_separated_and_noise_is_not():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3.0, size=(5, 16))
    train_y, test_y = np.repeat(np.arange(5), 40), np.repeat(np.arange(5), 100)
    train_x = centres[train_y] + rng.normal(size=(200, 16))
    test_x = centres[test_y] + rng.normal(size=(500, 16))
    params = fit_probe(train_x, train_y, 5, l2_reg=1e-4, steps=100)
    assert accuracy(params, test_x, test_y) > 0.97
    noise = fit_probe(rng.normal(size=(200, 16)), train_y, 5, l2_reg=1e-4, steps=100)
    assert accuracy(noise, test_x, test_y) < 0.4  # chance is 0.2


def test_a_run_reports_probe_accuracy_from_its_pre_logits(tmp_path):
    c = tiny_config(total_steps=30)
    c.evals["probe"] = {"kind": "linear_probe", "steps": 50}
    final = train_and_evaluate(c, tmp_path)["final"]
    assert set(final) >= {"probe/accuracy", "probe/train_accuracy", "eval/accuracy"}
    assert final["probe/accuracy"] > 0.5  # chance 0.1
    assert final["probe/train_accuracy"] >= final["probe/accuracy"] - 0.1


@pytest.mark.parametrize("section, message", [
    ({"l2_reg": -1.0}, "l2_reg=-1.0 must be a number >= 0"),
    ({"steps": 0}, r"steps=0 must be an integer >= 1 \(L-BFGS iterations\)"),
    ({"shots": (1,)}, r"unknown keys \['shots'\]; valid for kind='linear_probe'"),
])
def test_bad_probe_sections_fail_before_any_work(section, message):
    c = tiny_config()
    c.evals["probe"] = {"kind": "linear_probe", **section}
    with pytest.raises(ValueError, match=message):
        validate(c)
