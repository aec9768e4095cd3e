"""The few-shot linear evaluator (big_vision's fewshot_lsr): the closed-form ridge against
numpy's least squares, the shot draws, and the evaluator on a trained run's pre-logits."""

import numpy as np
import pytest

from tests.helpers import tiny_config
from vit_jax.config import validate
from vit_jax.evaluators import ModelView
from vit_jax.evaluators.fewshot import (
    FewShot,
    fewshot_accuracy,
    fit_ridge,
    shot_indices,
)
from vit_jax.models import create_model
from vit_jax.train import train_and_evaluate


def ridge_by_lstsq(x, t, l2):
    """The same minimiser through an augmented least-squares system: [x; sqrt(l) I] w ~ [t; 0]."""
    d = x.shape[1]
    a = np.vstack([x, np.sqrt(l2) * np.eye(d)])
    b = np.vstack([t, np.zeros((d, t.shape[1]))])
    return np.linalg.lstsq(a, b, rcond=None)[0]


@pytest.mark.parametrize("n,d", [(40, 6), (6, 40)])  # more examples than features, and fewer
def test_fit_ridge_is_the_regularised_least_squares_solution(n, d):
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
    np.testing.assert_allclose(fit_ridge(x, t, 0.5), ridge_by_lstsq(x, t, 0.5), atol=1e-9)


def test_fewshot_accuracy_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4.0, size=(4, 16))  # 4 separable classes
    train_y, test_y = np.repeat(np.arange(4), 5), np.repeat(np.arange(4), 50)
    train_x = centres[train_y] + rng.normal(size=(20, 16))
    test_x = centres[test_y] + rng.normal(size=(200, 16))
    got = fewshot_accuracy(train_x, train_y, test_x, test_y, 4, l2_reg=1024.0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    feats = lambda x: np.hstack([(x - mean) / std, np.full((len(x), 1), 100.0)])  # noqa: E731
    w = ridge_by_lstsq(feats(train_x), 2.0 * np.eye(4)[train_y] - 1.0, 1024.0)
    want = np.mean((feats(test_x) @ w).argmax(1) == test_y)
    assert got == pytest.approx(want) and got > 0.95
    noise = fewshot_accuracy(rng.normal(size=(20, 16)), train_y, test_x, test_y, 4, 1024.0)
    assert noise < 0.6  # features unrelated to the labels do not separate the classes


def test_shot_draws_take_k_per_class_nested_and_seeded():
    labels = np.array([0, 1, 2] * 10)
    one, five = shot_indices(labels, 3, 1, seed=0), shot_indices(labels, 3, 5, seed=0)
    assert sorted(labels[five].tolist()) == [0] * 5 + [1] * 5 + [2] * 5
    assert set(one) <= set(five)
    assert not np.array_equal(five, shot_indices(labels, 3, 5, seed=1))
    np.testing.assert_array_equal(five, shot_indices(labels, 3, 5, seed=0))


def test_a_run_reports_fewshot_accuracy_from_its_pre_logits(tmp_path):
    c = tiny_config(total_steps=30)
    c.evals["fewshot"] = {"kind": "fewshot", "shots": (1, 10), "seeds": 2}
    results = train_and_evaluate(c, tmp_path)
    final = results["final"]
    assert set(final) >= {"fewshot/1shot", "fewshot/10shot", "eval/accuracy"}
    assert final["fewshot/10shot"] > 0.4 and final["fewshot/10shot"] > final["fewshot/1shot"]


def test_a_model_without_pre_logits_is_a_clear_error():
    c = tiny_config()
    evaluator = FewShot(c.data, batch_size=96, shots=(1,), l2_reg=1.0, seeds=1,
                        train_split="train", split=None, prefix="f/")
    cnn = create_model("SimpleCNN", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="needs a model with pre-logits"):
        evaluator(ModelView.of(cnn))


@pytest.mark.parametrize("section, message", [
    ({"shots": (0, 5)}, "shots=.*integers >= 1"),
    ({"l2_reg": -1.0}, "l2_reg=-1.0 must be a number > 0"),
    ({"seeds": 0}, "seeds=0 must be an integer >= 1"),
    ({"patch_size": 2}, r"unknown keys \['patch_size'\]; valid for kind='fewshot'"),
])
def test_bad_fewshot_sections_fail_before_any_work(section, message):
    c = tiny_config()
    c.evals["fewshot"] = {"kind": "fewshot", **section}
    with pytest.raises(ValueError, match=message):
        validate(c)
