"""Input pipeline: embedded builders, train/eval iterators, determinism, resume, process shards."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys

import grain
import numpy as np
import pytest

from vit_jax import data
from vit_jax.data.iterator import BatchIterator
from vit_jax.data.order import EpochOrder, global_position
from vit_jax.data.shapes import Shapes
from vit_jax.data.shapes_render import render_shapes
from vit_jax.data.sources import load_split

SHAPES = dict(image_size=16, num_train=240, num_test=50, seed=3)
PP_TRAIN = "decode|inception_crop(16, area_min=50)|flip_lr|value_range(-1,1)|onehot(6)"
PP_EVAL = "decode|value_range(-1,1)|onehot(6)"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def cfg(data_dir):
    return dict(name="shapes", data_dir=data_dir, shapes=SHAPES, pp_train=PP_TRAIN, pp_eval=PP_EVAL)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# --- Embedded datasets -------------------------------------------------------------------------


def test_shapes_builder_counts_shapes_labels(cfg):
    info = data.dataset_info(cfg)
    assert (info.num_classes, info.num_train, info.num_eval) == (6, 240, 50)
    assert info.image_shape == (16, 16, 3)
    assert info.class_names == ("circle", "square", "triangle", "star", "cross", "ring")
    split = load_split(data.resolve(cfg), "train")
    source = split.records.source  # tfds.data_source: random access, images kept encoded.
    labels = np.array([source[i]["label"] for i in range(len(source))])
    assert np.bincount(labels).tolist() == [40] * 6  # Balanced by construction.
    assert isinstance(source[0]["image"], bytes)


def test_shapes_prepared_once(cfg, data_dir, monkeypatch):
    data.dataset_info(cfg)  # Prepared (maybe by another test) ...
    variant = os.path.join(data_dir, "shapes", "size16_train240_test50_seed3", "1.0.0")
    files = sorted(os.listdir(variant))
    mtimes = [os.stat(os.path.join(variant, f)).st_mtime_ns for f in files]

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a prepared dataset")

    monkeypatch.setattr(Shapes, "_generate_examples", fail)
    assert data.dataset_info(cfg).num_train == 240  # ... and only read the second time.
    assert sorted(os.listdir(variant)) == files
    assert [os.stat(os.path.join(variant, f)).st_mtime_ns for f in files] == mtimes


def test_shapes_parameter_sets_prepare_apart(cfg, data_dir):
    other = dict(cfg, shapes=dict(SHAPES, seed=4, num_train=60, num_test=12))
    assert data.dataset_info(other).num_train == 60
    prepared = os.listdir(os.path.join(data_dir, "shapes"))
    assert sorted(d for d in prepared if not d.startswith(".")) == [
        "size16_train240_test50_seed3",
        "size16_train60_test12_seed4",
    ]


def test_shapes_render_is_deterministic_and_varied():
    a, la = render_shapes(64, 24, seed=7)
    b, lb = render_shapes(64, 24, seed=7)
    c, _ = render_shapes(64, 24, seed=8)
    assert a.shape == (64, 24, 24, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert set(la.tolist()) == set(range(6))
    assert a.std() > 40  # Colourful clutter, not flat images.
    test, _ = render_shapes(64, 24, seed=7, stream=1)
    assert not np.array_equal(a, test)  # Train and test are different draws.


def test_digits_builder(data_dir):
    cfg = dict(
        name="digits",
        data_dir=data_dir,
        pp_train="decode|resize(16)|to_rgb|value_range(0,1)|onehot(10)",
        pp_eval="decode|resize(16)|to_rgb|value_range(0,1)|onehot(10)",
    )
    info = data.dataset_info(cfg)
    assert (info.num_classes, info.num_train, info.num_eval) == (10, 1500, 297)
    assert info.image_shape == (16, 16, 3)
    test = load_split(data.resolve(cfg), "test").records.source
    labels = np.array([test[i]["label"] for i in range(len(test))])
    assert np.bincount(labels, minlength=10).min() >= 28  # Stratified: ~29.7 per class.
    raw = load_split(data.resolve(dict(cfg, pp_train="decode")), "train").records
    pixels = np.stack([data.build_pp("decode")(raw[i])["image"] for i in range(50)])
    assert pixels.shape == (50, 8, 8, 1) and pixels.max() == 255 and pixels.min() == 0
    smooth = "decode|resize(32)|flip_lr|value_range(-1,1)|onehot(10, label_smoothing=0.1)"
    batch = next(data.build_train_iterator(dict(cfg, pp_train=smooth), batch_size=8, seed=0))
    assert batch["image"].shape == (8, 32, 32, 1)
    np.testing.assert_allclose(batch["labels"].sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(batch["labels"].max(1), 0.91, rtol=1e-6)


# --- Train iterator ----------------------------------------------------------------------------


def test_train_batch_layout(cfg):
    batch = next(data.build_train_iterator(cfg, batch_size=32, seed=0))
    assert set(batch) == {"image", "label", "labels"}
    assert batch["image"].shape == (32, 16, 16, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert batch["labels"].shape == (32, 6) and batch["labels"].dtype == np.float32
    assert -1.0 <= batch["image"].min() < -0.5 and 0.5 < batch["image"].max() <= 1.0
    np.testing.assert_array_equal(batch["labels"].argmax(1), batch["label"])
    np.testing.assert_allclose(batch["labels"].sum(1), 1.0)


def test_train_deterministic_by_seed(cfg):
    a = take(data.build_train_iterator(cfg, batch_size=16, seed=1), 3)
    b = take(data.build_train_iterator(cfg, batch_size=16, seed=1), 3)
    c = take(data.build_train_iterator(cfg, batch_size=16, seed=2), 3)
    assert_batches_equal(a, b)
    assert not np.array_equal(a[0]["label"], c[0]["label"])


def test_epochs_cover_split_and_reshuffle(cfg):
    split_labels = load_split(data.resolve(cfg), "train").records
    counts = np.bincount([split_labels[i]["label"] for i in range(240)], minlength=6)
    batches = take(data.build_train_iterator(cfg, batch_size=40, seed=0), 12)  # Two epochs.
    epoch1 = np.concatenate([b["label"] for b in batches[:6]])
    epoch2 = np.concatenate([b["label"] for b in batches[6:]])
    np.testing.assert_array_equal(np.bincount(epoch1, minlength=6), counts)
    np.testing.assert_array_equal(np.bincount(epoch2, minlength=6), counts)
    assert not np.array_equal(epoch1, epoch2)
    order = EpochOrder(240, seed=0)
    first = [order(p)[1] for p in range(240)]
    second = [order(p)[1] for p in range(240, 480)]
    assert sorted(first) == sorted(second) == list(range(240)) and first != second


def test_resume_from_state_is_bitwise_identical(cfg):
    cfg = dict(cfg, mixup_alpha=0.4)
    run = data.build_train_iterator(cfg, batch_size=16, seed=5)
    take(run, 4)
    state = json.loads(json.dumps(run.get_state()))  # Must survive a JSON checkpoint.
    assert state["step"] == 4
    expected = take(run, 3)
    resumed = data.build_train_iterator(cfg, batch_size=16, seed=5)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), expected)
    # Resuming to an earlier step in the same iterator works as well.
    run.set_state(state)
    assert_batches_equal(take(run, 3), expected)


def test_state_from_other_pipeline_is_rejected(cfg):
    state = data.build_train_iterator(cfg, batch_size=16, seed=5).get_state()
    other = data.build_train_iterator(cfg, batch_size=8, seed=5)
    with pytest.raises(data.DataError, match="global_batch_size: saved 16, now 8"):
        other.set_state(state)



def test_repeats_place_r_copies_of_each_drawn_example_side_by_side():
    order, plain = EpochOrder(10, seed=4, repeats=3), EpochOrder(10, seed=4)
    first = plain.permutation(0)
    assert [order(p) for p in range(10)] == [(0, int(first[i])) for i in
                                             (0, 0, 0, 1, 1, 1, 2, 2, 2, 3)]
    assert [order.copy(p) for p in range(12)] == [0, 1, 2] * 3 + [0, 0, 1]  # 10 per epoch
    assert order(10) == (1, int(plain.permutation(1)[0]))  # reshuffled each epoch
    assert [EpochOrder(10, seed=4, repeats=1)(p) for p in range(25)] == \
        [plain(p) for p in range(25)]


def test_repeated_copies_share_the_label_and_differ_in_augmentation(cfg):
    fixed = take(data.build_train_iterator(dict(cfg, aug_repeats=3, pp_train=PP_EVAL),
                                           batch_size=12, seed=1), 1)[0]
    augmented = take(data.build_train_iterator(dict(cfg, aug_repeats=3), batch_size=12,
                                               seed=1), 1)[0]
    for start in range(0, 12, 3):
        rows = slice(start, start + 3)
        assert (fixed["image"][rows] == fixed["image"][start]).all()  # the same example
        assert (augmented["label"][rows] == augmented["label"][start]).all()
        images = augmented["image"][rows]
        assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1],
                                                                               images[2])
    assert len({fixed["image"][i].tobytes() for i in range(0, 12, 3)}) == 4  # 4 examples


def test_repeats_are_part_of_the_resume_fingerprint(cfg):
    repeated = data.build_train_iterator(dict(cfg, aug_repeats=3), batch_size=8, seed=1)
    take(repeated, 2)
    plain = data.build_train_iterator(cfg, batch_size=8, seed=1)
    with pytest.raises(data.DataError, match="aug_repeats: saved 3, now 1"):
        plain.set_state(repeated.get_state())
    before_repeats = {k: v for k, v in plain.get_state().items() if k != "aug_repeats"}
    plain.set_state(before_repeats)  # a checkpoint from before the option: no repeats


@pytest.mark.parametrize("changes, message", [
    (dict(aug_repeats=0), "aug_repeats must be an int >= 1"),
    (dict(aug_repeats=2.0), "aug_repeats must be an int >= 1"),
    (dict(aug_repeats=3, packing=dict(seq_len=16, max_images=4, patch_size=4)),
     "packing does not combine with aug_repeats"),
])
def test_bad_repeats_are_one_line_errors(cfg, changes, message):
    with pytest.raises(data.DataError, match=message):
        data.resolve(dict(cfg, **changes))

def test_worker_processes_give_the_same_batches(cfg):
    cfg = dict(cfg, mixup_alpha=0.4)
    local = take(data.build_train_iterator(dict(cfg, workers=0), batch_size=16, seed=2), 4)
    workers = data.build_train_iterator(dict(cfg, workers=2, prefetch=1), batch_size=16, seed=2)
    try:
        assert_batches_equal(take(workers, 4), local)
    finally:
        workers.close()



def _die_in_a_worker(index):
    if multiprocessing.parent_process() is not None:  # a grain worker, not the main process
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    return {"x": np.full(2, index)}


def test_a_killed_worker_is_one_line_naming_workers_and_prefetch():
    batches = grain.MapDataset.range(8).map(_die_in_a_worker)
    it = BatchIterator(batches, workers=1, prefetch=2, num_steps=None, fingerprint={})
    try:
        with pytest.raises(data.DataError) as raised:
            next(it)
    finally:
        it.close()
    message = str(raised.value)
    assert "\n" not in message and "out-of-memory killer" in message, message
    assert "data.workers=1" in message and "data.prefetch=2" in message, message

@pytest.mark.parametrize("held_in", ["local", "global_jax"])
def test_batches_held_past_close_do_not_leak_shared_memory(cfg, held_in):
    """A program whose last worker batches outlive the iterator's close (as a train loop's do)
    must still release their shared memory when it ends: Python's resource tracker reports any
    segment left over as "leaked shared_memory objects". ``global_jax``: jax arrays on CPU alias
    the batch's memory and, held by a module global, live until the interpreter finalises."""
    hold = {"local": "held = [next(it) for _ in range(3)]\n",
            "global_jax": "HELD.extend(jax.device_put(next(it)) for _ in range(3)); held = HELD\n"}
    program = (
        "import jax\n"
        "from vit_jax import data\n"
        "HELD = []\n"
        "def main():\n"
        f"    it = data.build_train_iterator(dict({cfg!r}, workers=2, prefetch=2), "
        "batch_size=16, seed=1)\n"
        f"    {hold[held_in]}"
        "    it.close()\n"
        "    print(sum(float(b['image'].sum()) for b in held))\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "leaked" not in done.stderr, done.stderr
    float(done.stdout.split()[-1])  # the held batches were still readable after close


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0)])
def test_process_shards_concatenate_to_global_batch(cfg, mixup_alpha, cutmix_alpha):
    cfg = dict(cfg, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    single = take(data.build_train_iterator(cfg, batch_size=24, seed=9), 3)
    shards = [
        take(
            data.build_train_iterator(cfg, batch_size=8, seed=9, process_index=i, process_count=3),
            3,
        )
        for i in range(3)
    ]
    for step in range(3):
        for key in ("image", "label", "labels"):
            joined = np.concatenate([shards[i][step][key] for i in range(3)])
            np.testing.assert_array_equal(joined, single[step][key], err_msg=key)
    images = np.concatenate([s[0]["image"].reshape(8, -1) for s in shards])
    assert len(np.unique(images, axis=0)) == 24  # No example is in two shards.


def test_global_positions_partition_each_global_batch():
    positions = [
        [global_position(q, 4, process, 3) for q in range(8)] for process in range(3)
    ]  # Two steps of a global batch of 12.
    assert positions[0] == [0, 1, 2, 3, 12, 13, 14, 15]
    assert positions[2] == [8, 9, 10, 11, 20, 21, 22, 23]
    assert sorted(sum(positions, [])) == list(range(24))


def test_train_subset_is_first_n(cfg):
    sub = dict(cfg, train_subset=30)
    assert data.dataset_info(sub).num_train == 30
    records = load_split(data.resolve(cfg), "train").records
    first30 = sorted(records[i]["label"] for i in range(30))
    epoch = take(data.build_train_iterator(sub, batch_size=10, seed=0), 3)
    assert sorted(np.concatenate([b["label"] for b in epoch]).tolist()) == first30
    with pytest.raises(data.DataError, match="train_subset=241 exceeds the 240 examples"):
        data.dataset_info(dict(cfg, train_subset=241))


# --- Eval iterator -----------------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "process_count"), [(16, 1), (7, 3), (50, 1)])
def test_eval_covers_each_example_once(cfg, batch_size, process_count):
    seen, shapes, steps = [], set(), []
    for process in range(process_count):
        iterator = data.build_eval_iterator(
            cfg, batch_size=batch_size, process_index=process, process_count=process_count
        )
        batches = list(iterator)
        steps.append(len(batches))
        for batch in batches:
            shapes.add(tuple(v.shape for v in batch.values()))
            assert (batch["index"][~batch["mask"]] == -1).all()
            seen.extend(batch["index"][batch["mask"]].tolist())
    global_batch = batch_size * process_count
    assert steps == [-(-50 // global_batch)] * process_count  # Same count on every process.
    assert len(shapes) == 1  # Padded: every batch has the same shape.
    assert sorted(seen) == list(range(50))  # Each example exactly once.


def test_eval_examples_match_the_split(cfg):
    batch = next(data.build_eval_iterator(cfg, batch_size=50))
    records = load_split(data.resolve(cfg), "test").records
    pp = data.build_pp(PP_EVAL)
    for row in (0, 17, 49):
        expected = pp(records[int(batch["index"][row])])
        np.testing.assert_array_equal(batch["image"][row], expected["image"])
        assert batch["label"][row] == expected["label"]


# --- Config errors -----------------------------------------------------------------------------


def test_config_errors_name_valid_choices(cfg):
    with pytest.raises(data.DataError, match="unknown data config keys \\['batch'\\]; valid keys"):
        data.dataset_info(dict(cfg, batch=3))
    with pytest.raises(data.DataError, match="unknown dataset name 'cifar'; valid: 'digits'"):
        data.dataset_info(dict(cfg, name="cifar"))
    with pytest.raises(data.DataError, match="unknown data.shapes keys \\['size'\\]"):
        data.dataset_info(dict(cfg, shapes=dict(size=3)))
    with pytest.raises(data.DataError, match="use onehot\\(6\\)"):
        data.dataset_info(dict(cfg, pp_eval="decode|onehot(10)"))
    with pytest.raises(data.DataError, match="end it with '\\|onehot\\(6\\)'"):
        data.dataset_info(dict(cfg, pp_train="decode|value_range(-1,1)"))
    with pytest.raises(data.DataError, match="even per-process batch_size"):
        data.build_train_iterator(dict(cfg, mixup_alpha=0.2), batch_size=7, seed=0)
    with pytest.raises(data.DataError, match="even per-process batch_size"):
        data.build_train_iterator(dict(cfg, cutmix_alpha=1.0), batch_size=7, seed=0)
    with pytest.raises(data.DataError, match="cutmix_alpha must be a number >= 0"):
        data.dataset_info(dict(cfg, cutmix_alpha=-1))


def test_config_accepts_config_dict(cfg):
    config = data.default_config()
    config.update(cfg)
    assert data.dataset_info(config).num_eval == 50
