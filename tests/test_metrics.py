"""Metric writing (jsonl + TensorBoard), progress line, masked eval metrics, param table."""

import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tensorboardX.proto import event_pb2

from vit_jax import metrics


def _read_tb_scalars(logdir) -> dict[tuple[str, int], float]:
    """Parses TFRecord-framed event files: u64 length, u32 crc, payload, u32 crc."""
    scalars = {}
    for path in logdir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_writer_jsonl_and_tensorboard(tmp_path):
    with metrics.MetricWriter(str(tmp_path)) as writer:
        writer.write_scalars(10, {"train/loss": jnp.float32(2.5), "train/lr": 1e-3})
        writer.write_scalars(10, {"eval/accuracy": np.float64(0.25)})  # same step: merged
        writer.write_scalars(20, {"train/loss": 1.5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 10, "train/loss": 2.5, "train/lr": 1e-3, "eval/accuracy": 0.25},
        {"step": 20, "train/loss": 1.5},
    ]
    tb = _read_tb_scalars(tmp_path)
    assert tb[("train/loss", 10)] == 2.5
    assert tb[("train/loss", 20)] == 1.5
    assert tb[("eval/accuracy", 10)] == 0.25

    # Without resume_step, a writer appends to the same file.
    with metrics.MetricWriter(str(tmp_path), tensorboard=False) as writer:
        writer.write_scalars(30, {"train/loss": 0.5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1]) == {"step": 30, "train/loss": 0.5}


def _purge_steps(logdir) -> list[int]:
    """Steps of the SessionLog START events that tell TensorBoard to drop later events."""
    steps = []
    for path in logdir.glob("events.out.tfevents.*"):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                steps.append(event.step)
    return steps


def test_writer_resumed_run_keeps_each_step_once(tmp_path):
    with metrics.MetricWriter(str(tmp_path)) as writer:  # a run killed after step 30
        for step in (10, 20, 30):
            writer.write_scalars(step, {"train/loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "train/lo')  # the line a kill cut in half
    assert _purge_steps(tmp_path) == []
    with metrics.MetricWriter(str(tmp_path), resume_step=20) as writer:  # resumed from 20
        writer.write_scalars(30, {"train/loss": 0.5})
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1]) == {
        "step": 30, "train/loss": 0.5}
    assert _purge_steps(tmp_path) == [21]


def test_writer_is_silent_off_process_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with metrics.MetricWriter(str(tmp_path / "w")) as writer:
        writer.write_scalars(1, {"loss": 1.0})
    assert not (tmp_path / "w").exists()


def test_progress_reporter_every_n_steps(monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock["t"])
    lines = []
    report = metrics.ProgressReporter(
        30, batch_size=8, every_steps=10, every_secs=None, print_fn=lines.append
    )
    for step in range(1, 31):
        clock["t"] += 0.5  # 2 steps/s -> 16 img/s
        report(step, loss=jnp.float32(3.0 / step), lr=jnp.float32(1e-3))
    assert len(lines) == 3
    assert lines[0] == (
        "step 10/30 (33.3%) | loss 0.3000 | lr 1.000e-03 | 16.0 img/s | elapsed 0:00:05"
        " | ETA 0:00:10"
    )
    assert lines[2].startswith("step 30/30 (100.0%) | loss 0.1000")
    assert lines[2].endswith("elapsed 0:00:15 | ETA 0:00:00")


def test_progress_reporter_first_eta_excludes_compilation(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock["t"])
    lines = []
    report = metrics.ProgressReporter(100, batch_size=10, every_steps=10, every_secs=None,
                                      print_fn=lines.append)
    clock["t"] += 60.0  # step 1 compiles for a minute
    report(1)
    for step in range(2, 11):
        clock["t"] += 0.5
        report(step)
    assert lines == ["step 10/100 (10.0%) | 20.0 img/s | elapsed 0:01:04 | ETA 0:00:45"]


def test_progress_reporter_every_secs(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock["t"])
    lines = []
    report = metrics.ProgressReporter(1000, batch_size=4, every_secs=10.0, print_fn=lines.append)
    for step in range(1, 26):
        clock["t"] += 1.0
        report(step)
    assert [line.split(" | ")[0] for line in lines] == ["step 10/1000 (1.0%)",
                                                         "step 20/1000 (2.0%)"]
    assert "4.0 img/s" in lines[1]


def test_masked_eval_metrics():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    labels = jnp.array([0, 1, 0, 2])
    mask = jnp.array([1, 1, 1, 0])  # the last (wrong) example is padding
    batch1 = jax.jit(metrics.eval_batch_metrics)(logits, labels, mask)
    np.testing.assert_allclose(batch1.compute()["accuracy"], 2 / 3, rtol=1e-6)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(batch1.compute()["loss"], ce[:3].mean(), rtol=1e-6)

    # Fully padded batch contributes nothing; one-hot labels work the same as ids.
    empty = metrics.eval_batch_metrics(logits, labels, jnp.zeros(4))
    batch2 = metrics.eval_batch_metrics(logits[:2], jax.nn.one_hot(labels[:2], 3))
    total = batch1.merge(empty).merge(batch2)
    result = metrics.compute_eval_metrics(total)
    assert set(result) == {"eval/loss", "eval/accuracy", "eval/top5"}
    assert result["eval/top5"] == 1.0  # 3 classes: the true one is always in the top 5
    assert result["eval/accuracy"] == pytest.approx(4 / 5, rel=1e-6)
    assert result["eval/loss"] == pytest.approx(float((ce[:3].sum() + ce[:2].sum()) / 5), 1e-6)


def test_top5_counts_the_true_class_among_the_five_highest_logits():
    logits = jnp.tile(jnp.arange(7.0), (4, 1))  # class 6 ranks first, class 0 last
    labels = jnp.array([6, 2, 1, 0])  # ranks 1, 5, 6, 7
    out = metrics.eval_batch_metrics(logits, labels, jnp.array([1, 1, 1, 0])).compute()
    assert float(out["top5"]) == pytest.approx(2 / 3) and float(out["accuracy"]) == \
        pytest.approx(1 / 3)



def test_top5_breaks_ties_by_class_id_as_top1_does():
    """A zero-initialised head gives equal logits: only classes 0-4 are in its top 5, as
    only class 0 is its top 1 (lax.top_k's order), not every class."""
    logits = jnp.zeros((4, 1000))
    out = metrics.eval_batch_metrics(logits, jnp.array([0, 4, 5, 999])).compute()
    assert float(out["top5"]) == pytest.approx(2 / 4) and float(out["accuracy"]) == \
        pytest.approx(1 / 4)
    tied = jnp.array([[0.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0]])  # 6 classes tie for first
    assert [float(metrics.eval_batch_metrics(tied, jnp.array([c])).compute()["top5"])
            for c in (1, 5, 6)] == [1.0, 1.0, 0.0]

class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])
        self.head = nnx.Linear(4, 3, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)  # RNG state: not a parameter


def test_parameter_summary_groups_and_full_table(tmp_path):
    table = tmp_path / "parameters.txt"
    summary = metrics.parameter_summary(Tiny(nnx.Rngs(0)), table)
    lines = summary.splitlines()
    assert lines[0].startswith("Parameters: 55 in 6 arrays")  # 2 * (16 + 4) + 12 + 3
    assert [line.split()[:2] for line in lines[1:]] == [["blocks", "40"], ["head", "15"]]
    assert "(2 x 20)" in lines[1]
    full = table.read_text()
    assert "blocks/0/kernel" in full and "head/bias" in full and "rngs" not in full
    assert "Total: 55" in full
