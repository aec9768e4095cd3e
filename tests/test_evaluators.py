"""Evaluators from ``config.evals``: built once, run on their own schedule, the same numbers on a
training run's state and on a model loaded from its checkpoint."""

import json

import ml_collections as mlc
import pytest

from tests.helpers import tiny_config
from vit_jax import evaluators, load_model
from vit_jax.config import validate
from vit_jax.evaluators.classification import Classification
from vit_jax.train import train_and_evaluate


def with_train_eval(**changes):
    config = tiny_config(**changes)
    config.evals.train_eval = mlc.ConfigDict(
        dict(kind="classification", split="train[:96]", every_steps=10))
    return config


def test_each_evaluator_runs_on_its_schedule_and_matches_a_loaded_model(tmp_path):
    config = with_train_eval(total_steps=30)  # eval every 15 steps (tiny_config)
    results = train_and_evaluate(config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = {name: [r["step"] for r in rows if f"{name}/accuracy" in r]
             for name in ("eval", "train_eval")}
    assert steps == {"eval": [15, 30], "train_eval": [10, 20, 30]}
    final = results["final"]
    assert set(final) >= {"eval/accuracy", "eval/loss", "train_eval/accuracy", "train_eval/loss"}

    # The same evaluator on the checkpoint's model, outside training, gives the same numbers.
    model = load_model(tmp_path, verbose=False)
    again = Classification(config.data, batch_size=96, split="train[:96]", prefix="train_eval/")
    for key, value in again(evaluators.ModelView.of(model)).items():
        assert value == pytest.approx(final[key], abs=1e-6)
    whole = Classification(config.data, batch_size=config.eval_batch_size)
    first, second = (whole(evaluators.ModelView.of(model)) for _ in range(2))  # reusable
    assert first == second and first["eval/accuracy"] == pytest.approx(
        final["eval/accuracy"], abs=1e-6)


@pytest.mark.parametrize("section,match", [
    (dict(kind="linear_probe"),
     r"config.evals.bad.kind='linear_probe'; valid: \['classification', 'fewshot'\]"),
    (dict(kind="classification", splitt="test"), r"config.evals.bad: unknown keys \['splitt'\]"),
    (dict(kind="classification", every_steps=0), "config.evals.bad.every_steps=0 must be a"),
])
def test_bad_evaluator_sections_fail_before_any_work(section, match):
    config = tiny_config()
    config.evals.bad = mlc.ConfigDict(section)
    with pytest.raises(ValueError, match=match):
        validate(config)
