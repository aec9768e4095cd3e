"""Packed training (data.packing): resolution sampling, token dropping, online bin-packing that
never splits or loses an image, exact resume, per-process shards, the packed loss, and a run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import tiny_config
from tests.test_train import assert_same_checkpoint
from vit_jax.config import validate
from vit_jax.data import DataError, build_pp, build_train_iterator, dataset_info, resolve
from vit_jax.data.order import example_rng
from vit_jax.train import train_and_evaluate
from vit_jax.train_step import packed_loss_and_accuracy

PP = "decode|resize_native(4, 16, multiple=4)|value_range(-1,1)|onehot(10)"


def packed_config(**packing):
    c = tiny_config().data
    c.pp_train = PP
    c.packing = {"seq_len": 32, "max_images": 6, "patch_size": 4, **packing}
    return c


def test_resize_native_draws_the_longer_side_and_keeps_the_aspect_ratio():
    pp = build_pp("resize_native(8, 40, multiple=4)")
    sides = set()
    for i in range(200):
        h, w, _ = pp({"image": np.zeros((30, 60, 3), np.uint8)}, example_rng(0, 0, i))[
            "image"].shape
        assert h % 4 == 0 and w % 4 == 0 and 8 <= w <= 40 and h >= 4
        assert abs(h / w - 0.5) <= 2 / w + 1e-9  # 1:2 up to rounding to whole patches
        sides.add(w)
    assert min(sides) == 8 and max(sides) == 40 and len(sides) == 9  # every multiple of 4
    with pytest.raises(DataError, match="need ints multiple <= side_min <= side_max"):
        build_pp("resize_native(20, 10)")


def take_epoch(it, n):
    """Batches until ``n`` examples were placed; (batches, stream positions in order)."""
    batches, seen = [], []
    while len(seen) < n:
        batch = next(it)
        batches.append(batch)
        seen += batch["position"][batch["image_mask"]].tolist()
    return batches, seen


def test_every_example_once_per_epoch_none_split_sequences_within_bounds():
    cfg = packed_config()
    n = dataset_info(cfg).num_train
    it = build_train_iterator(cfg, batch_size=4, seed=0)
    batches, seen = take_epoch(it, n)
    first_epoch = [p for p in seen if p < n]
    assert sorted(first_epoch) == list(range(n))  # every example of the epoch, once
    padding = []
    for b in batches:
        assert b["patches"].shape == (4, 32, 16) and b["image_mask"].sum(1).max() <= 6
        for s in range(4):
            seg = b["segment_ids"][s]
            used = seg[seg > 0]
            assert np.all(np.diff(np.flatnonzero(seg > 0)) == 1)  # tokens first, padding after
            assert np.all(np.diff(used) >= 0)  # each image one contiguous run: never split
            slots = np.unique(used)
            np.testing.assert_array_equal(slots, np.arange(1, len(slots) + 1))
            assert b["image_mask"][s].sum() == len(slots)
            for slot in slots:  # positions of a whole image: its full grid, row-major
                pos = b["positions"][s][seg == slot]
                rows, cols = pos[:, 0].max() + 1, pos[:, 1].max() + 1
                assert len(pos) == rows * cols
                assert (b["grids"][s][seg == slot] == (rows, cols)).all()  # its grid, each token
            assert not b["grids"][s][seg == 0].any()
        padding.append(np.mean(b["segment_ids"] == 0))
    assert np.mean(padding) < 0.10  # the bin-packing leaves under 10% padding here


def test_resume_from_any_state_is_bitwise():
    cfg = packed_config(token_drop=0.5)
    it = build_train_iterator(cfg, batch_size=3, seed=1)
    for _ in range(7):
        next(it)
    state = it.get_state()
    rest = [next(it) for _ in range(5)]
    resumed = build_train_iterator(cfg, batch_size=3, seed=1)
    resumed.set_state(state)
    for a, b in zip(rest, (next(resumed) for _ in range(5)), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert state["packed_waiting"] or state["packed_next"] > 0
    with pytest.raises(DataError, match="not a packed iterator's"):
        resumed.set_state({"step": 3})


def test_token_drop_keeps_a_subset_of_each_images_patches():
    cfg = packed_config(token_drop=0.75)
    it = build_train_iterator(cfg, batch_size=4, seed=0)
    full = build_train_iterator(packed_config(), batch_size=4, seed=0)
    for local in range(30):
        patches, positions, _, grid = it.tokens(local)
        all_patches, all_positions, _, full_grid = full.tokens(local)
        n = len(all_patches)
        assert grid == full_grid and grid[0] * grid[1] == n  # the whole image's grid
        assert max(1, round(0.25 * n)) <= len(patches) <= n
        index = [np.flatnonzero((all_positions == p).all(1))[0] for p in positions]
        assert np.all(np.diff(index) > 0)  # a subset, in grid order
        np.testing.assert_array_equal(patches, all_patches[index])


def test_processes_pack_disjoint_shards_of_the_stream():
    cfg = packed_config()
    n = dataset_info(cfg).num_train
    seen = [take_epoch(build_train_iterator(cfg, batch_size=2, seed=0, process_index=j,
                                            process_count=2), n // 2)[1] for j in (0, 1)]
    assert all(p % 2 == 0 for p in seen[0]) and all(p % 2 == 1 for p in seen[1])


def test_packed_loss_is_the_mean_over_real_images_only():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5)), jnp.float32)
    labels = jax.nn.one_hot(jnp.asarray([[1, 2, 0], [4, 0, 0]]), 5)
    mask = jnp.asarray([[True, True, False], [True, False, False]])
    loss, accuracy = packed_loss_and_accuracy(logits, labels, mask)
    ce = -jnp.sum(jax.nn.log_softmax(logits) * labels, -1)
    assert float(loss) == pytest.approx(float((ce[0, 0] + ce[0, 1] + ce[1, 0]) / 3), rel=1e-6)
    right = (logits.argmax(-1) == labels.argmax(-1))
    assert float(accuracy) == pytest.approx(float((right[0, 0] + right[0, 1] + right[1, 0]) / 3))


@pytest.mark.parametrize("changes, message", [
    ({"data.packing": {"seq_len": 32, "max_images": 6}}, r"data\.packing\.patch_size=None"),
    ({"data.packing": {"seq_len": 32, "max_images": 6, "patch_size": 4, "bins": 2}},
     r"data\.packing: unknown keys \['bins'\]"),
    ({"data.packing": {"seq_len": 32, "max_images": 6, "patch_size": 4, "token_drop": 1.0}},
     r"token_drop=1\.0 must be in \[0, 1\)"),
    ({"data.mixup_alpha": 0.2}, "does not combine with mixup_alpha"),
    ({"model.class_token": True}, r"set --config\.model\.class_token=False"),
    ({"model.pool": "none"}, r"--config\.model\.pool=gap"),
    ({"data.packing.patch_size": 2}, r"--config\.data\.packing\.patch_size=4 \(the model's\)"),
])
def test_bad_packing_configs_fail_before_any_work(changes, message):
    c = packed_run_config()
    for key, value in changes.items():
        section, name = key.rsplit(".", 1)
        target = c
        for part in section.split("."):
            target = target[part]
        target[name] = value
    with pytest.raises((ValueError, DataError), match=message):
        validate(c)
    resolve(packed_config())  # the base config itself is valid


def packed_run_config(**changes):
    c = tiny_config(**changes)
    c.batch_size = 8
    c.data.pp_train = PP
    c.data.pp_eval = "decode|resize(16)|value_range(-1,1)|onehot(10)"
    c.data.packing = {"seq_len": 32, "max_images": 6, "patch_size": 4}
    c.model.update(image_size=16, pool="gap", class_token=False)
    return c


def test_a_packed_run_learns_reports_padding_and_resumes_bitwise(tmp_path, monkeypatch):
    cfg = {"total_steps": 24, "eval_every_steps": 12, "log_every_steps": 4,
           "model.dropout": 0.1}
    calls = iter(range(1, 1000))
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: next(calls) == 9)
    train_and_evaluate(packed_run_config(**cfg), tmp_path / "split")
    monkeypatch.setattr("vit_jax.train.preemption_requested", lambda step=None: False)
    train_and_evaluate(packed_run_config(**cfg), tmp_path / "split")
    train_and_evaluate(packed_run_config(**cfg), tmp_path / "whole")
    assert_same_checkpoint(tmp_path / "split", tmp_path / "whole", 24, packed_run_config(**cfg))
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text()
            .splitlines()]
    padding = [r["train/padding"] for r in rows if "train/padding" in r]
    images = [r["train/images"] for r in rows if "train/images" in r]
    assert padding and max(padding) < 0.15 and min(images) > 8  # ~5 images per sequence


def test_a_longer_packed_run_beats_chance(tmp_path, capsys):
    final = train_and_evaluate(packed_run_config(total_steps=200, eval_every_steps=200),
                               tmp_path)["final"]
    assert final["eval/accuracy"] > 0.4 and final["eval/loss"] < 0.8 * np.log(10)
    out = capsys.readouterr().out  # a batch row is a sequence of several images
    assert "batch 8 sequences" in out and " seq/s " in out and " img/s " not in out
