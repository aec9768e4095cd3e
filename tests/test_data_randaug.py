"""RandAugment (pp op ``randaug``): every op against its definition on small arrays, the level
mappings, the draws, and the op in a pipeline."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from vit_jax.data import DataError, build_pp
from vit_jax.data.ops_randaug import (
    BIG_VISION_OPS,
    TIMM_OPS,
    RandAugment,
    autocontrast,
    blend,
    brightness,
    color,
    contrast,
    cutout,
    equalize,
    invert,
    posterize,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    solarize,
    solarize_add,
    translate_x,
    translate_y,
)
from vit_jax.data.order import example_rng

GRID = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)  # value = 4·row + column


def test_blend_interpolates_extrapolates_clips_and_truncates():
    a, b = np.array([[[10]]], np.uint8), np.array([[[20]]], np.uint8)
    assert blend(a, b, 0.0)[0, 0, 0] == 10 and blend(a, b, 1.0)[0, 0, 0] == 20
    assert blend(a, b, 0.55)[0, 0, 0] == 15  # 15.5 truncated
    assert blend(a, b, 30.0)[0, 0, 0] == 255  # 10 + 300 clipped
    assert blend(b, a, 3.0)[0, 0, 0] == 0  # 20 - 30 clipped


def test_autocontrast_stretches_each_channel_and_keeps_flat_ones():
    image = np.stack([np.array([[10, 20], [30, 40]]), np.full((2, 2), 7)], -1).astype(np.uint8)
    out = autocontrast(image)
    np.testing.assert_array_equal(out[..., 0], [[0, 85], [170, 255]])  # (x-10)·255/30
    np.testing.assert_array_equal(out[..., 1], image[..., 1])


def test_equalize_is_pils_equalize_per_channel():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 120, (16, 16, 3)).astype(np.uint8)
    want = np.asarray(ImageOps.equalize(Image.fromarray(image)))
    np.testing.assert_array_equal(equalize(image), want)
    flat = np.full((4, 4, 1), 9, np.uint8)  # one level: step 0, unchanged
    np.testing.assert_array_equal(equalize(flat), flat)


def test_invert_posterize_solarize_and_solarize_add():
    v = np.array([[[0], [100], [127], [128], [183], [255]]], np.uint8)
    np.testing.assert_array_equal(invert(v)[..., 0], [[255, 155, 128, 127, 72, 0]])
    np.testing.assert_array_equal(posterize(v, 4)[..., 0], [[0, 96, 112, 128, 176, 240]])
    np.testing.assert_array_equal(posterize(v, 0)[..., 0], [[0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(solarize(v, 128)[..., 0], [[0, 100, 127, 127, 72, 0]])
    np.testing.assert_array_equal(solarize(v, 256)[..., 0], v[..., 0])  # m=10: nothing above
    np.testing.assert_array_equal(solarize_add(v, 110)[..., 0], [[110, 210, 237, 128, 183, 255]])
    np.testing.assert_array_equal(solarize_add(v, 200)[..., 0], [[200, 255, 255, 128, 183, 255]])


def test_color_blends_with_the_luma_and_is_the_identity_on_grey_images():
    pixel = np.array([[[200, 100, 50]]], np.uint8)
    luma = int(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # 124
    np.testing.assert_array_equal(color(pixel, 0.0)[0, 0], [luma] * 3)
    np.testing.assert_array_equal(color(pixel, 0.5)[0, 0], [162, 112, 87])  # luma+(x-luma)/2
    np.testing.assert_array_equal(color(GRID, 1.9), GRID)


def test_contrast_blends_with_the_mean_grey_and_brightness_with_black():
    image = np.array([[[0], [10]], [[20], [50]]], np.uint8)  # mean 20
    np.testing.assert_array_equal(contrast(image, 0.5)[..., 0], [[10, 15], [20, 35]])
    np.testing.assert_array_equal(contrast(image, 0.0)[..., 0], np.full((2, 2), 20))
    np.testing.assert_array_equal(brightness(image, 0.5)[..., 0], [[0, 5], [10, 25]])
    np.testing.assert_array_equal(brightness(image, 1.9)[..., 0], [[0, 19], [38, 95]])


def test_sharpness_smooths_only_the_interior_with_the_13_kernel():
    image = np.zeros((3, 3, 1), np.uint8)
    image[1, 1, 0] = 130
    blurred = sharpness(image, 0.0)
    assert blurred[1, 1, 0] == 50  # 5·130/13; border pixels are not smoothed
    np.testing.assert_array_equal(np.delete(blurred.ravel(), 4), 0)
    assert sharpness(image, 1.9)[1, 1, 0] == 202  # extrapolated: 50 + 1.9·(130 - 50)
    np.testing.assert_array_equal(sharpness(image, 1.0), image)


def test_translations_move_content_and_fill_grey():
    np.testing.assert_array_equal(translate_x(GRID, 1)[..., 0],
                                  [[1, 2, 3, 128], [5, 6, 7, 128], [9, 10, 11, 128]])
    np.testing.assert_array_equal(translate_x(GRID, -2)[..., 0],
                                  [[128, 128, 0, 1], [128, 128, 4, 5], [128, 128, 8, 9]])
    np.testing.assert_array_equal(translate_y(GRID, 1)[..., 0],
                                  [[4, 5, 6, 7], [8, 9, 10, 11], [128] * 4])
    np.testing.assert_array_equal(translate_x(GRID, 100), np.full_like(GRID, 128))


def test_shears_sample_at_pixel_centres():
    # output (x, y) = input (x + level·y, y) in coordinates whose pixel centres are at +0.5
    want_x = [[GRID[y, x + y + 1, 0] if x + y + 1 < 4 else 128 for x in range(4)]
              for y in range(3)]
    np.testing.assert_array_equal(shear_x(GRID, 1.0)[..., 0], want_x)
    want_y = [[GRID[int(y + 0.5 + 0.5 * (x + 0.5)), x, 0] if y + 0.5 + 0.5 * (x + 0.5) < 3
               else 128 for x in range(4)] for y in range(3)]
    np.testing.assert_array_equal(shear_y(GRID, 0.5)[..., 0], want_y)


def test_rotate_turns_counter_clockwise():
    square = np.arange(9, dtype=np.uint8).reshape(3, 3, 1)
    np.testing.assert_array_equal(rotate(square, 90), np.rot90(square))
    np.testing.assert_array_equal(rotate(square, -90), np.rot90(square, -1))


def test_cutout_greys_a_clipped_square_around_the_centre():
    image = np.zeros((6, 6, 3), np.uint8)
    out = cutout(image, 2, (1, 4))
    mask = np.zeros((6, 6), bool)
    mask[0:3, 2:6] = True  # rows 1-2..1+2 clipped at 0, columns 4-2..4+2 clipped at 6
    np.testing.assert_array_equal(out[..., 0] == 128, mask)
    np.testing.assert_array_equal(cutout(image, 0, (3, 3)), image)


@pytest.mark.parametrize("op, magnitude, expected", [
    ("Posterize", 10, posterize(GRID * 20, 4)), ("Posterize", 5, posterize(GRID * 20, 2)),
    ("Solarize", 5, solarize(GRID * 20, 128)), ("SolarizeAdd", 10, solarize_add(GRID * 20, 110)),
    ("Brightness", 5, brightness(GRID * 20, 1.0)), ("Contrast", 10, contrast(GRID * 20, 1.9)),
    ("Color", 0, color(GRID * 20, 0.1)), ("Sharpness", 10, sharpness(GRID * 20, 1.9)),
    ("AutoContrast", 3, autocontrast(GRID * 20)), ("Invert", 3, invert(GRID * 20)),
    ("Equalize", 3, equalize(GRID * 20)),
])
def test_level_mappings_of_unsigned_ops(op, magnitude, expected):
    out = RandAugment(1, magnitude).apply(op, GRID * 20, np.random.default_rng(0))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("op, magnitude, amount, fn", [
    ("Rotate", 10, 30.0, rotate), ("Rotate", 5, 15.0, rotate), ("ShearX", 10, 0.3, shear_x),
    ("ShearY", 5, 0.15, shear_y), ("TranslateX", 10, 100.0, translate_x),
    ("TranslateY", 1, 10.0, translate_y),
])
def test_geometric_ops_take_their_magnitude_with_a_random_sign(op, magnitude, amount, fn):
    image = np.random.default_rng(0).integers(0, 256, (120, 120, 1)).astype(np.uint8)
    signs = set()
    for seed in range(12):
        out = RandAugment(1, magnitude).apply(op, image, np.random.default_rng(seed))
        plus = np.array_equal(out, fn(image, amount))
        minus = np.array_equal(out, fn(image, -amount))
        assert plus or minus
        signs.add(plus)
    assert signs == {True, False}


def test_timm_translations_are_relative_to_the_image_side():
    image = np.random.default_rng(0).integers(0, 256, (20, 40, 1)).astype(np.uint8)
    out = RandAugment(1, 10, ops="timm").apply("TranslateX", image, np.random.default_rng(0))
    assert any(np.array_equal(out, translate_x(image, s * 18.0)) for s in (1, -1))  # .45·40


def test_cutout_size_follows_the_magnitude():
    image = np.zeros((100, 100, 1), np.uint8)
    out = RandAugment(1, 5, cutout=40).apply("Cutout", image, np.random.default_rng(3))
    rows, cols = np.nonzero(out[..., 0] == 128)
    assert rows.max() - rows.min() + 1 <= 40 and cols.max() - cols.min() + 1 <= 40
    assert (out == 128).sum() > 0


def test_op_lists():
    assert len(BIG_VISION_OPS) == 16 and len(TIMM_OPS) == 15 and "Cutout" not in TIMM_OPS


def test_layers_draw_ops_uniformly_and_deterministically(monkeypatch):
    augment, picked = RandAugment(1, 10), []
    with monkeypatch.context() as patch:
        patch.setattr(RandAugment, "apply",
                      lambda self, name, image, rng: picked.append(name) or image)
        for i in range(1600):
            augment({"image": np.zeros((4, 4, 1), np.uint8)}, example_rng(0, 0, i))
    counts = [picked.count(name) for name in BIG_VISION_OPS]
    assert min(counts) > 60 and max(counts) < 140  # 100 expected each
    augment = RandAugment(2, 10)
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    a = augment({"image": image}, example_rng(0, 0, 5))["image"]
    b = augment({"image": image}, example_rng(0, 0, 5))["image"]
    changed = sum(not np.array_equal(augment({"image": image}, example_rng(0, 0, i))["image"],
                                     image) for i in range(20))
    np.testing.assert_array_equal(a, b)
    assert changed >= 18  # two ops at full magnitude almost always change the image
    assert np.array_equal(RandAugment(0, 10)({"image": image}, example_rng(0, 0, 1))["image"],
                          image)


def test_timm_applies_each_layer_with_probability_half():
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    augment = RandAugment(1, 10, ops="timm")
    unchanged = sum(np.array_equal(augment({"image": image}, example_rng(0, 0, i))["image"],
                                   image) for i in range(200))
    assert 70 < unchanged < 130



@pytest.mark.parametrize("op, magnitude, expected", [
    ("Posterize", 9, posterize(GRID * 20, 1)), ("Posterize", 0, posterize(GRID * 20, 4)),
    ("Solarize", 9, solarize(GRID * 20, 26)), ("Solarize", 0, solarize(GRID * 20, 256)),
    ("SolarizeAdd", 10, solarize_add(GRID * 20, 110)),
])
def test_increasing_ops_grow_stronger_with_the_magnitude(op, magnitude, expected):
    """timm's ``inc1``: 4 - int(4 m/10) bits kept, inverted above 256 - int(256 m/10)."""
    augment = RandAugment(1, magnitude, ops="timm", increasing=True)
    np.testing.assert_array_equal(augment.apply(op, GRID * 20, np.random.default_rng(0)),
                                  expected)


def test_increasing_enhancements_take_one_plus_or_minus_the_level():
    augment, image = RandAugment(1, 9, ops="timm", increasing=True), GRID * 20
    outs = {tuple(augment.apply("Contrast", image, np.random.default_rng(seed)).ravel())
            for seed in range(12)}
    assert outs == {tuple(contrast(image, f).ravel()) for f in (1.0 + 0.81, 1.0 - 0.81)}
    assert np.array_equal(RandAugment(1, 0, increasing=True).apply(
        "Brightness", image, np.random.default_rng(0)), image)  # m = 0: unchanged


def test_mstd_draws_each_magnitude_around_m_and_clips_it(monkeypatch):
    """timm's ``mstd``: N(m, mstd^2) per applied op, clipped to 0...10 (seen through the
    rotation angle, 3 degrees per magnitude unit)."""
    angles = []
    monkeypatch.setattr("vit_jax.data.ops_randaug.SIGNED",
                        {"Rotate": lambda image, degrees: angles.append(abs(degrees)) or image})
    augment = RandAugment(1, 9, ops="timm", mstd=0.5)
    for seed in range(2000):
        augment.apply("Rotate", GRID, np.random.default_rng(seed))
    magnitudes = np.array(angles) / 3.0
    assert magnitudes.max() <= 10.0 and (magnitudes == 10.0).mean() > 0.01  # clipped at 10
    kept = magnitudes[magnitudes < 10.0]
    assert kept.mean() == pytest.approx(8.98, abs=0.05) and magnitudes.std() == \
        pytest.approx(0.5, abs=0.05)
    angles.clear()
    RandAugment(1, 9, ops="timm").apply("Rotate", GRID, np.random.default_rng(0))
    assert angles == [27.0]  # no mstd: exactly m

def test_in_a_pp_string_and_bad_arguments():
    pp = build_pp("decode|randaug(2, 9)|value_range(-1, 1)")
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    out = pp({"image": image}, example_rng(0, 0, 0))["image"]
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    for spec, message in [("randaug(2, 11)", r"magnitude must be in \[0, 10\]"),
                          ("randaug(-1)", "num_layers must be an int >= 0"),
                          ("randaug(2, 10, ops='tf')", r"ops must be one of \['big_vision', "
                                                       r"'timm'\]"),
                          ("randaug(translate=-1)", "translate must be a number >= 0"),
                          ("randaug(mstd=-0.5)", "mstd must be a number >= 0"),
                          ("randaug(increasing=1)", "increasing must be True or False")]:
        with pytest.raises(DataError, match=message):
            build_pp(spec)
    with pytest.raises(DataError, match="^randaug takes uint8 images"):  # no wrapper
        build_pp("value_range(-1, 1)|randaug")({"image": image}, example_rng(0, 0, 0))
