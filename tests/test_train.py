import gc
import json
import re

import jax
import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_config
from vit_jax.checkpoints import Checkpointer
from vit_jax.config import build_model, validate
from vit_jax.train import NonFiniteLossError, train_and_evaluate
from vit_jax.train_state import optim_config


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trains_evaluates_and_writes_logs(tmp_path, capsys):
    results = train_and_evaluate(tiny_config(**{"total_steps": 60}), tmp_path)
    out = capsys.readouterr().out
    assert "step 60/60" in out and "img/s" in out and "ETA" in out
    assert "Parameters: 18,218 in 40 arrays" in out and "Total:" not in out  # short summary
    assert "Total: 18,218" in (tmp_path / "parameters.txt").read_text()  # the full table
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]  # log(10) = 2.30 at step 0
    assert results["final"]["eval/accuracy"] > 0.5  # chance is 0.1
    assert results["best"]["eval/accuracy"] >= results["final"]["eval/accuracy"]
    assert list((tmp_path).glob("events.out.tfevents*"))
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert Checkpointer(tmp_path).latest_step() == 60


def test_resume_continues_and_finished_run_reports_complete(tmp_path, capsys):
    train_and_evaluate(tiny_config(**{"total_steps": 15}), tmp_path)
    capsys.readouterr()
    train_and_evaluate(tiny_config(**{"total_steps": 30}), tmp_path)
    out = capsys.readouterr().out
    assert "Resuming from step 15" in out and "Training 15 -> 30" in out
    again = train_and_evaluate(tiny_config(**{"total_steps": 30}), tmp_path)
    out = capsys.readouterr().out
    assert "Run already complete at step 30/30" in out and "Training" not in out
    assert "Parameters" not in out
    assert again["final"]["step"] == 30


def test_preempted_run_resumes_bitwise_identical(tmp_path, monkeypatch, capsys):
    cfg = {"model.dropout": 0.1, "model.drop_path": 0.1, "total_steps": 30}
    calls = iter(range(1, 1000))
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: next(calls) == 12)
    train_and_evaluate(tiny_config(**cfg), tmp_path / "split")
    assert "Preempted: saved step 12" in capsys.readouterr().out
    assert Checkpointer(tmp_path / "split").latest_step() == 12
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: False)
    train_and_evaluate(tiny_config(**cfg), tmp_path / "split")
    train_and_evaluate(tiny_config(**cfg), tmp_path / "whole")
    assert_same_checkpoint(tmp_path / "split", tmp_path / "whole", 30, tiny_config(**cfg))


def restore_params(workdir, step, config):
    info = validate(config)
    model = build_model(config, info.num_classes)
    from vit_jax import optim
    optimizer = nnx.Optimizer(model, optim.build_tx(optim_config(config)), wrt=nnx.Param)
    r = Checkpointer(workdir).restore(step, model=model, optimizer=optimizer,
                                      rng=jax.random.PRNGKey(0))
    return nnx.to_pure_dict(nnx.state((model, optimizer))), r


def assert_same_checkpoint(a, b, step, config):
    pa, ra = restore_params(a, step, config)
    pb, rb = restore_params(b, step, config)
    as_array = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(  # noqa: E731
        x.dtype, jax.dtypes.prng_key) else x
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(as_array(x), as_array(y)), pa, pb)
    assert ra.data_state == rb.data_state


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(total_steps=40)
    train_and_evaluate(tiny_config(total_steps=15), tmp_path)
    cfg.optim.lr = 1e30
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at step \d+.*"
                       r"last good checkpoint is step 15"):
        train_and_evaluate(cfg, tmp_path)
    assert Checkpointer(tmp_path).all_steps() == [15]


def test_divergence_before_any_checkpoint_says_so_and_suggests_what_is_not_set(tmp_path):
    cfg = tiny_config(total_steps=40)
    cfg.optim.lr = 1e30  # grad_clip_norm=1.0 is set: not suggested again
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at step \d+ .*; "
                       r"stopped without saving it; no checkpoint was saved yet\. Try a lower "
                       r"--config\.optim\.lr, a longer --config\.optim\.warmup_steps$"):
        train_and_evaluate(cfg, tmp_path)
    assert Checkpointer(tmp_path).all_steps() == []


@pytest.mark.parametrize("changes,match", [
    ({"model.variant": "Q/16"}, "unknown ViT size 'Q'"),
    ({"model.patch_size": 3}, "image size 8x8 is not divisible by patch size 3x3"),
    ({"model.num_heads": 3}, "width 32 is not divisible by num_heads 3"),
    ({"model.pool": "avg"}, "unknown pool 'avg'"),
    ({"data.name": "imagenet"}, "unknown dataset name 'imagenet'"),
    ({"data.pp_train": "decode|sharpen(2)"}, "sharpen"),
    ({"optim.name": "lamb"}, "lamb"),
    ({"optim.schedule": "cosin"}, "cosin"),
    ({"batch_size": 24, "optim.grad_accum_steps": 5}, "grad_accum_steps=5"),
    ({"total_steps": 0}, "config.total_steps must be a positive integer"),
    ({"eval_batch_size": 100}, "eval_batch_size=100 is not divisible by the 8 data"),
    ({"mesh.data": 3}, "uses 3 devices but 8 are available"),
    ({"optim.lr": -1.0}, r"optim.lr=-1.0 must be a number in \[0, inf\)"),
    ({"optim.b2": 1.0}, r"optim.b2=1.0 must be a number in \[0, 1\)"),
    ({"optim.warmup_steps": 40}, "optim.warmup_steps .* exceed the 30 training steps"),
    ({"model.dropout": 1.5}, r"dropout=1.5 must be a rate in \[0, 1\)"),
    ({"model.layerscale": -1.0}, "layerscale=-1.0 must be None"),
    ({"model.depth": 0}, "depth=0 must be an integer >= 1"),
    ({"init_from": "no/such/run"}, "config.init_from=no/such/run: nothing there"),
])
def test_bad_config_fails_before_any_work(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(tiny_config(**changes), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_config_key_is_an_error():
    locked = tiny_config()
    locked.lock()  # as the command line does (lock_config=True)
    with pytest.raises((AttributeError, KeyError), match="widht"):
        locked.update_from_flattened_dict({"model.widht": 3})
    with pytest.raises(ValueError, match="widht.*valid options: .*width"):
        validate(tiny_config(**{"model.widht": 3}))


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_checkpoint_from_another_config_is_a_clear_error(tmp_path):
    train_and_evaluate(tiny_config(total_steps=15), tmp_path)
    saved = tiny_config().model.mlp_dim
    with pytest.raises(ValueError, match="does not match this config") as error:
        train_and_evaluate(tiny_config(**{"total_steps": 30, "model.mlp_dim": 32}), tmp_path)
    # The arrays that differ, by name and shape, found from the checkpoint's metadata:
    assert re.search(rf"model: \S+/mlp/\S+: saved \([^)]*\b{saved}\b[^)]*\) float32, "
                     r"this config \([^)]*\b32\b[^)]*\) float32", str(error.value)), error.value
    gc.collect()  # Orbax never started a read that failed: nothing is left pending
