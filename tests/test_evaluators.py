"""Evaluators from ``config.evals``: built once, run on their own schedule, the same numbers on a
training run's state and on a model loaded from its checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import ml_collections as mlc
import pytest

from tests.helpers import tiny_config
from vit_jax import evaluators, load_model
from vit_jax.config import validate
from vit_jax.evaluators.classification import Classification
from vit_jax.train import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]


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
    (dict(kind="knn"),
     r"config.evals.bad.kind='knn'; valid: \['classification', 'fewshot', 'linear_probe', "
     r"'packed'\]"),
    (dict(kind="classification", splitt="test"), r"config.evals.bad: unknown keys \['splitt'\]"),
    (dict(kind="classification", every_steps=0), "config.evals.bad.every_steps=0 must be a"),
])
def test_bad_evaluator_sections_fail_before_any_work(section, match):
    config = tiny_config()
    config.evals.bad = mlc.ConfigDict(section)
    with pytest.raises(ValueError, match=match):
        validate(config)


def test_one_run_evaluates_on_several_datasets(tmp_path):
    """A section's ``data`` overrides the run's: the digits again as an image folder (the same
    images, so the same accuracy) and few-shot on the shapes, another label set."""
    folder = tmp_path / "digits8"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_digits_folder.py"),
                    str(folder), "--size", "8"], check=True, capture_output=True)
    config = tiny_config(total_steps=20)
    config.evals.folder = mlc.ConfigDict(dict(kind="classification",
                                              data=dict(name="folder", root=str(folder))))
    config.evals.shapes = mlc.ConfigDict(dict(kind="fewshot", shots=(5,), seeds=1, data=dict(
        name="shapes", shapes=dict(image_size=8, num_train=120, num_test=60),
        pp_train="decode(1)|value_range(-1,1)|onehot(6)",
        pp_eval="decode(1)|value_range(-1,1)|onehot(6)")))
    final = train_and_evaluate(config, tmp_path / "run")["final"]
    assert final["folder/accuracy"] == pytest.approx(final["eval/accuracy"], abs=1e-6)
    assert final["folder/loss"] == pytest.approx(final["eval/loss"], rel=1e-5)
    assert 0.0 <= final["shapes/5shot"] <= 1.0
    config.evals.folder.data = mlc.ConfigDict(dict(name="shapes"))
    with pytest.raises(ValueError, match=r"evals.folder.data: pp_train .* use onehot\(6\)"):
        validate(config)
    config.evals.folder.data = config.evals.shapes.data
    with pytest.raises(ValueError, match="evals.folder.data has 6 classes, the model 10"):
        validate(config)
    config.evals.folder.data = mlc.ConfigDict(dict(nme="shapes"))
    with pytest.raises(ValueError, match=r"config.evals.folder.data: unknown data config keys"):
        validate(config)
