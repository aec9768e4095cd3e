"""The pp-string mini-language: parsing, each op's output, errors, and batch-level mixup."""

import io

import numpy as np
import pytest
from PIL import Image

from vit_jax import data
from vit_jax.data.mixup import Mixup, cut_box, cut_pairs, mix_pairs
from vit_jax.data.order import example_rng


def png(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def example():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    return {"image": png(image), "label": 3}, image


def run(spec, ex, rng=None):
    return data.build_pp(spec)(ex, rng if rng is not None else np.random.default_rng(0))


def test_decode_resize_value_range_onehot(example):
    ex, image = example
    out = run("decode|resize(16)|value_range(-1,1)|onehot(5)", ex)
    assert out["image"].shape == (16, 16, 3) and out["image"].dtype == np.float32
    assert out["image"].min() >= -1.0 and out["image"].max() <= 1.0
    np.testing.assert_array_equal(out["labels"], [0, 0, 0, 1, 0])
    decoded = run("decode", ex)["image"]
    np.testing.assert_array_equal(decoded, image)  # PNG is lossless.
    scaled = run("decode|value_range(-1,1)", ex)["image"]
    np.testing.assert_allclose(scaled, image / 127.5 - 1, atol=1e-6)
    assert run("decode|resize((8, 12))", ex)["image"].shape == (8, 12, 3)



def test_normalize_is_torchvisions_normalize_of_the_0_1_image(example):
    ex, image = example
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    out = run("decode|normalize", ex)["image"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (image / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    grey = run("decode|normalize(0.5, 0.25)", ex)["image"]  # one value for every channel
    np.testing.assert_allclose(grey, (image / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    for spec, message in [("normalize(std=(0.2, 0))", "std > 0"),
                          ("normalize((0.5, 0.5), (0.2, 0.2, 0.2))", "one value per channel")]:
        with pytest.raises(data.DataError, match=message):
            data.build_pp(spec)
    with pytest.raises(data.DataError, match="3 channel statistics for an image of 1"):
        data.build_pp("normalize")({"image": np.zeros((2, 2, 1), np.uint8)}, None)

def test_channels(example):
    ex, image = example
    grey = run("decode(channels=1)", ex)["image"]
    assert grey.shape == (20, 30, 1)
    rgb = run("decode(channels=1)|to_rgb", ex)["image"]
    assert rgb.shape == (20, 30, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    grey_png = {"image": png(image[..., 0]), "label": 0}
    assert run("decode", grey_png)["image"].shape == (20, 30, 1)  # Grey stays 1 channel.
    assert run("decode(channels=3)", grey_png)["image"].shape == (20, 30, 3)


def test_crops(example):
    ex, image = example
    central = run("decode|central_crop(10)", ex)["image"]
    np.testing.assert_array_equal(central, image[5:15, 10:20])
    crop = run("decode|random_crop((20, 24))", ex)["image"]
    assert crop.shape == (20, 24, 3)
    padded = run("decode|resize(16)|random_crop(16, pad=4)", ex, np.random.default_rng(1))
    assert padded["image"].shape == (16, 16, 3)
    a = run("decode|inception_crop(12)", ex, example_rng(0, 0, 5))["image"]
    b = run("decode|inception_crop(12)", ex, example_rng(0, 0, 5))["image"]
    c = run("decode|inception_crop(12)", ex, example_rng(0, 0, 6))["image"]
    assert a.shape == (12, 12, 3)
    np.testing.assert_array_equal(a, b)  # Same (seed, epoch, index): same crop.
    assert not np.array_equal(a, c)
    assert run("decode|resize_small(10)", ex)["image"].shape == (10, 15, 3)


def test_inception_crop_windows_keep_to_their_area_and_aspect_ranges():
    from vit_jax.data.ops_image import InceptionCrop

    wide = InceptionCrop(8, area_min=20, area_max=40, aspect_min=1.9, aspect_max=2.1)
    for seed in range(50):
        top, left, h, w = wide._window(200, 300, np.random.default_rng(seed))
        assert 0.18 <= h * w / 60000 <= 0.42 and 1.8 <= w / h <= 2.2
        assert 0 <= top <= 200 - h and 0 <= left <= 300 - w
    whole = InceptionCrop(8, area_min=100, aspect_min=1.0, aspect_max=1.0)
    assert whole._window(50, 50, np.random.default_rng(0)) == (0, 0, 50, 50)
    # nothing fits a 4:1 strip at aspect 1: the fallback is the central square
    assert whole._window(10, 40, np.random.default_rng(0)) == (0, 15, 10, 10)
    with pytest.raises(data.DataError, match=r"need 0 < aspect_min <= aspect_max"):
        data.build_pp("inception_crop(8, aspect_min=2, aspect_max=1)")


def test_flip_lr(example):
    ex, image = example
    np.testing.assert_array_equal(run("decode|flip_lr(p=1.0)", ex)["image"], image[:, ::-1])
    np.testing.assert_array_equal(run("decode|flip_lr(p=0.0)", ex)["image"], image)
    flips = [
        not np.array_equal(run("decode|flip_lr", ex, example_rng(0, 0, i))["image"], image)
        for i in range(200)
    ]
    assert 70 < sum(flips) < 130  # p=0.5 by default.


def test_resize_float_image(example):
    ex, _ = example
    out = run("decode|value_range(0,1)|resize(10)", ex)["image"]
    assert out.shape == (10, 10, 3) and out.dtype == np.float32 and 0 <= out.min() <= 1


def test_onehot_label_smoothing():
    out = run("onehot(10, label_smoothing=0.1)", {"label": 7})["labels"]
    np.testing.assert_allclose(out[7], 0.91, rtol=1e-6)
    np.testing.assert_allclose(np.delete(out, 7), 0.01, rtol=1e-6)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-6)
    with pytest.raises(data.DataError, match="label 7 is outside \\[0, 5\\)"):
        run("onehot(5)", {"label": 7})


def test_bad_pp_strings_name_the_op_and_valid_ops():
    with pytest.raises(data.DataError, match="unknown pp op 'blur'; valid ops: .*decode.*flip_lr"):
        data.build_pp("decode|blur(3)")
    with pytest.raises(data.DataError, match="pp op 'resize': bad arguments.*signature: resize"):
        data.build_pp("decode|resize(32, 32, 32)")
    with pytest.raises(data.DataError, match="resize: size must be a positive int"):
        data.build_pp("decode|resize(-1)")
    with pytest.raises(data.DataError, match="onehot: label_smoothing must be in"):
        data.build_pp("onehot(10, label_smoothing=1.5)")
    with pytest.raises(data.DataError, match="cannot parse pp item"):
        data.build_pp("decode|resize(32")
    with pytest.raises(data.DataError, match="arguments must be Python literals"):
        data.build_pp("resize(size)")
    with pytest.raises(data.DataError, match="non-empty"):
        data.build_pp("")
    with pytest.raises(data.DataError, match="has random ops: pass a np.random.Generator"):
        data.build_pp("flip_lr")({"image": np.zeros((2, 2, 3), np.uint8)})


def test_op_failure_is_reported_with_the_op(example):
    ex, _ = example
    with pytest.raises(data.DataError, match="central_crop: crop \\(64, 64\\) is larger"):
        run("decode|central_crop(64)", ex)
    with pytest.raises(data.DataError, match="decode: cannot decode image"):
        run("decode", {"image": b"not an image", "label": 0})


def test_decode_takes_pil_images_and_arrays_like_bytes():
    """Prediction feeds PIL images and arrays: the same mode/channel handling as files."""
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    for pixels in (rgba, grey):
        for spec in ("decode", "decode(channels=1)", "decode(channels=3)"):
            want = run(spec, {"image": png(pixels)})["image"]
            got = run(spec, {"image": Image.fromarray(pixels)})["image"]
            np.testing.assert_array_equal(got, want)
    assert run("decode", {"image": Image.fromarray(rgba)})["image"].shape == (6, 5, 3)
    assert run("decode", {"image": Image.fromarray(grey)})["image"].shape == (6, 5, 1)
    np.testing.assert_array_equal(run("decode", {"image": grey})["image"], grey[..., None])
    with pytest.raises(data.DataError, match="not in a format PIL reads"):
        run("decode", {"image": b"not an image"})


def test_without_label_ops_keeps_every_image_op():
    pp = data.build_pp("decode(channels=3)|resize(8)|value_range(0, 1)|"
                       "onehot(10, label_smoothing=0.1)")
    images = pp.without_label_ops()
    assert images.spec == "decode(channels=3)|resize(8)|value_range(0, 1)"
    assert [name for name, _ in images.ops] == ["decode", "resize", "value_range"]
    ex = {"image": png(np.full((4, 4), 255, np.uint8))}  # no label: onehot would fail
    np.testing.assert_array_equal(images(ex)["image"], np.ones((8, 8, 3), np.float32))
    assert data.build_pp("onehot(3)").without_label_ops().ops == []


def test_mix_pairs_exact_values():
    batch = {
        "image": np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1),
        "labels": np.eye(4, dtype=np.float32),
        "label": np.arange(4, dtype=np.int32),
    }
    out = mix_pairs(batch, 0.75)
    np.testing.assert_allclose(out["image"].ravel(), [0.25, 0.75, 2.25, 2.75])
    np.testing.assert_allclose(out["labels"][0], [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(out["labels"][3], [0, 0, 0.25, 0.75])
    np.testing.assert_allclose(out["labels"].sum(1), 1.0)
    np.testing.assert_array_equal(out["label"], batch["label"])  # Dominant label kept.


def test_mixup_weights_deterministic_and_dominant():
    mixup = Mixup(alpha=0.4, seed=0)
    weights = [mixup.weight(step) for step in range(100)]
    assert weights == [Mixup(0.4, 0).weight(step) for step in range(100)]
    assert min(weights) >= 0.5 and max(weights) <= 1.0
    assert len(set(weights)) == 100 and np.mean(weights) < 0.9  # Mixes, not near-identity.


def test_cutmix_pastes_the_partners_box_and_mixes_labels_by_area():
    image = np.stack([np.full((4, 6, 1), v, np.float32) for v in (1, 2, 3)])  # 3 rows
    labels = np.eye(3, dtype=np.float32)
    out = cut_pairs({"image": image, "labels": labels, "label": np.arange(3)}, (1, 3, 0, 3))
    np.testing.assert_array_equal(out["image"][0, 1:3, 0:3], 2)  # row 0 shows row 1 there
    np.testing.assert_array_equal(out["image"][1, 1:3, 0:3], 1)
    assert (out["image"][0] == 1).sum() == 24 - 6 and (out["image"][2] == 3).all()  # odd row
    np.testing.assert_allclose(out["labels"][0], [0.75, 0.25, 0])  # 6 of 24 pixels from row 1
    np.testing.assert_allclose(out["labels"][2], [0, 0, 1])
    np.testing.assert_array_equal(image[0], 1)  # the input batch is untouched


def test_cutmix_box_has_the_drawn_area_unless_clipped():
    top, bottom, left, right = cut_box(0.75, 16, 16, (0.5, 0.5))
    assert (bottom - top, right - left) == (8, 8)  # 1 - 0.75 of 256 pixels = 64
    top, bottom, left, right = cut_box(0.75, 16, 16, (0.0, 1.0))  # a corner: clipped
    assert (top, bottom, left, right) == (0, 4, 12, 16)


def test_cutmix_and_mixup_draws_are_seeded_dominant_and_both_used():
    both = Mixup(alpha=0.4, seed=0, cutmix_alpha=1.0)
    draws = [both.draw(step) for step in range(200)]
    assert draws == [Mixup(0.4, 0, 1.0).draw(step) for step in range(200)]
    kinds = [kind for kind, _, _ in draws]
    assert 70 < kinds.count("cutmix") < 130  # one or the other, each about half the steps
    assert min(lam for _, lam, _ in draws) >= 0.5
    assert {kind for kind, _, _ in map(Mixup(0.0, 0, 1.0).draw, range(50))} == {"cutmix"}
    batch = {"image": np.random.default_rng(0).random((4, 8, 8, 3), np.float32),
             "labels": np.eye(4, dtype=np.float32), "label": np.arange(4)}
    out = Mixup(0.0, 3, cutmix_alpha=1.0)(5, batch)
    changed = (out["image"] != batch["image"]).any(-1)
    assert changed.any() and (out["labels"].max(1) >= 0.5).all()
    np.testing.assert_allclose(out["labels"][0, 0], 1 - changed[0].mean(), rtol=1e-6)


def test_registering_an_op():
    @data.register_pp_op("test_invert")
    class Invert:
        def __call__(self, example, rng):
            return {**example, "image": 255 - example["image"]}

    out = run("test_invert", {"image": np.zeros((2, 2, 1), np.uint8)})
    assert out["image"].max() == 255 and "test_invert" in data.valid_pp_ops()
