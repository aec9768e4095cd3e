"""Random erasing (pp op ``random_erase``, timm's RandomErasing as DeiT uses it): the box's
geometry and rate against timm's definition, the three fills, and the op in a pipeline."""

import math

import numpy as np
import pytest

from vit_jax.data import DataError, build_pp
from vit_jax.data.ops_erase import RandomErase
from vit_jax.data.order import example_rng

IMAGE = np.random.default_rng(0).uniform(-1, 1, (32, 48, 3)).astype(np.float32)


def erased(op, seed, image=IMAGE):
    out = op({"image": image}, np.random.default_rng(seed))["image"]
    changed = np.argwhere((out != image).any(-1))
    return out, changed


def test_the_box_is_one_rectangle_within_the_area_and_aspect_ranges():
    op = RandomErase(p=1.0)
    areas, aspects = [], []
    for seed in range(400):
        out, changed = erased(op, seed)
        assert len(changed), "p=1 erases a 32x48 image (a box fits within 10 tries)"
        (top, left), (bottom, right) = changed.min(0), changed.max(0) + 1
        h, w = bottom - top, right - left
        assert len(changed) == h * w  # a filled rectangle, nothing outside it
        assert 0 < h < 32 and 0 < w < 48
        areas.append(h * w / (32 * 48))
        aspects.append(h / w)
        np.testing.assert_array_equal(np.delete(out, slice(top, bottom), 0),
                                      np.delete(IMAGE, slice(top, bottom), 0))
    # the drawn area is uniform in 2-33.3% before rounding the sides
    assert min(areas) > 0.015 and max(areas) < 0.36
    assert np.mean(areas) == pytest.approx((0.02 + 1 / 3) / 2, abs=0.02)
    # the aspect is log-uniform in 0.3-3.33: its log is symmetric around 0
    assert min(aspects) < 0.5 and max(aspects) > 2 and abs(np.mean(np.log(aspects))) < 0.15


def test_the_rate_is_p_and_draws_follow_the_generator():
    op = RandomErase(p=0.25)
    hits = sum(len(erased(op, seed)[1]) > 0 for seed in range(2000))
    assert hits / 2000 == pytest.approx(0.25, abs=0.03)
    np.testing.assert_array_equal(erased(op, 7)[0], erased(op, 7)[0])
    assert len(erased(RandomErase(p=0.0), 3)[1]) == 0


def test_the_three_fills():
    big = dict(p=1.0, area_min=30, area_max=33)
    out, changed = erased(RandomErase(**big, mode="pixel"), 1)
    box = out[changed[:, 0], changed[:, 1]]  # (pixels, channels) of noise
    assert abs(box.mean()) < 0.1 and box.std() == pytest.approx(1.0, abs=0.1)
    assert len(np.unique(box)) == box.size  # a value per pixel and channel
    out, changed = erased(RandomErase(**big, mode="channel"), 1)
    box = out[changed[:, 0], changed[:, 1]]
    assert (box == box[0]).all() and len(np.unique(box[0])) == 3  # one value per channel
    out, changed = erased(RandomErase(**big, mode="const"), 1)
    assert (out[changed[:, 0], changed[:, 1]] == 0).all()


def test_no_box_fits_an_image_of_one_row():
    row = IMAGE[:1]
    assert RandomErase(p=1.0).box(1, 48, np.random.default_rng(0)) is None
    np.testing.assert_array_equal(erased(RandomErase(p=1.0), 0, row)[0], row)


def test_box_sides_are_timms_rounding():
    op = RandomErase(p=1.0)
    rng, copy = np.random.default_rng(5), np.random.default_rng(5)
    top, left, h, w = op.box(32, 48, rng)
    area = 32 * 48 * copy.uniform(0.02, 1 / 3)
    aspect = math.exp(copy.uniform(math.log(0.3), math.log(1 / 0.3)))
    assert (h, w) == (round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect)))


def test_in_a_pp_string_after_value_range_and_bad_arguments():
    pp = build_pp("decode|value_range(-1, 1)|random_erase(1.0)")
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    out = pp({"image": image}, example_rng(0, 0, 0))["image"]
    assert out.dtype == np.float32 and (out != image / 127.5 - 1).any()
    with pytest.raises(DataError, match="put it after value_range"):
        build_pp("decode|random_erase(1.0)")({"image": image}, example_rng(0, 0, 0))
    for spec, message in [("random_erase(1.5)", r"p must be in \[0, 1\]"),
                          ("random_erase(area_min=50, area_max=10)", "area_min <= area_max"),
                          ("random_erase(aspect_min=2)", r"aspect_min must be in \(0, 1\]"),
                          ("random_erase(mode='noise')", "mode must be one of pixel, channel")]:
        with pytest.raises(DataError, match=message):
            build_pp(spec)
