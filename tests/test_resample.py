"""Position-embedding resampling matches each peer it is named after.

The torch reference below is written from PyTorch's documented/C++ algorithm (half-pixel source
coordinates, clamp-to-edge taps, Keys kernels; the antialias path's scaled support and weight
normalisation), independently of ``jax.image``; hand-derived values check the reference itself.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from flax import nnx

from vit_jax import create_model
from vit_jax.models.posemb import PositionEmbedding, sincos2d
from vit_jax.models.resample import (
    DEFAULT_METHOD,
    METHODS,
    resample_posemb,
    resize_grid,
    zoom_matrix,
)
from vit_jax.params import flat_params, load_params_into


def keys_cubic(x: float, a: float) -> float:
    x = abs(x)
    if x <= 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def torch_matrix(n_in: int, n_out: int, mode: str, antialias: bool) -> np.ndarray:
    """(n_out, n_in) weights of F.interpolate(size=n_out, align_corners=False) along one axis."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in))
    clamp = lambda j: min(max(j, 0), n_in - 1)  # noqa: E731
    for i in range(n_out):
        if antialias:  # _upsample_*_aa: PIL-style separable filter
            support = (1.0 if mode == "bilinear" else 2.0) * max(scale, 1.0)
            invscale = 1.0 / scale if scale >= 1.0 else 1.0
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            filt = ((lambda x: max(0.0, 1.0 - abs(x))) if mode == "bilinear"
                    else (lambda x: keys_cubic(x, -0.5)))
            w = np.array([filt((j - center + 0.5) * invscale) for j in range(lo, hi)])
            m[i, lo:hi] = w / w.sum()
            continue
        src = (i + 0.5) * scale - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)  # linear modes clamp negative source coordinates
            j0 = min(int(math.floor(src)), n_in - 1)
            t = src - j0
            m[i, j0] += 1 - t
            m[i, clamp(j0 + 1)] += t
        else:  # bicubic: taps floor(src)-1 .. floor(src)+2, clamped, Keys a=-0.75
            j0 = math.floor(src)
            t = src - j0
            for k, d in zip(range(-1, 3), (1 + t, t, 1 - t, 2 - t), strict=True):
                m[i, clamp(j0 + k)] += keys_cubic(d, -0.75)
    return m


TORCH = {"bilinear": ("bilinear", False), "bilinear_antialias": ("bilinear", True),
         "bicubic": ("bicubic", False), "bicubic_antialias": ("bicubic", True)}


def reference(grid: np.ndarray, new: tuple[int, int], method: str) -> np.ndarray:
    (h, w), (nh, nw) = grid.shape[:2], new
    if method == "zoom":
        mh, mw = zoom_matrix(h, nh), zoom_matrix(w, nw)
    else:
        mh, mw = (torch_matrix(h, nh, *TORCH[method]), torch_matrix(w, nw, *TORCH[method]))
    return np.einsum("Hh,Ww,hwd->HWd", mh, mw, grid.astype(np.float64))


# Hand-derived (see the kernel formulas above): [0, 1] -> 4 samples, [0, 1, 2, 3] -> 2.
HAND = {
    "bilinear": ([0, 0.25, 0.75, 1], [0.5, 2.5]),
    "bilinear_antialias": ([0, 0.25, 0.75, 1], [5 / 7, 16 / 7]),
    "bicubic": ([-0.10546875, 0.2265625, 0.7734375, 1.10546875], [0.40625, 2.59375]),
    "bicubic_antialias": ([-3 / 34, 29 / 140, 111 / 140, 37 / 34], [71 / 121, 292 / 121]),
    "zoom": ([0, 1 / 3, 2 / 3, 1], [0, 3]),
}


@pytest.mark.parametrize("method", METHODS)
def test_hand_values(method):
    up, down = HAND[method]
    for src, want in (([0.0, 1.0], up), ([0.0, 1.0, 2.0, 3.0], down)):
        x = np.array(src, np.float32).reshape(1, -1, 1)
        np.testing.assert_allclose(reference(x, (1, len(want)), method)[0, :, 0], want,
                                   atol=1e-12)
        got = resize_grid(jnp.asarray(x), (1, len(want)), method)
        np.testing.assert_allclose(np.asarray(got)[0, :, 0], want, atol=1e-6)


# Up, down by > 2x (where antialiasing matters), and one axis up with the other down.
GRIDS = [((4, 4), (7, 7)), ((14, 14), (4, 6)), ((3, 5), (8, 4))]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("old,new", GRIDS)
def test_matches_reference(method, old, new):
    prefix = 2
    rng = np.random.default_rng(0)
    posemb = rng.normal(size=(1, prefix + old[0] * old[1], 6)).astype(np.float32)
    out = resample_posemb(jnp.asarray(posemb), new, old_grid=old, num_prefix_tokens=prefix,
                          method=method)
    assert out.shape == (1, prefix + new[0] * new[1], 6)
    np.testing.assert_array_equal(out[0, :prefix], posemb[0, :prefix])  # prefix untouched
    want = reference(posemb[0, prefix:].reshape(*old, 6), new, method)
    np.testing.assert_allclose(np.asarray(out[0, prefix:]).reshape(want.shape), want, atol=1e-5)


@pytest.mark.parametrize("old,new", GRIDS + [((1, 4), (3, 1)), ((7, 7), (12, 12))])
def test_zoom_is_scipy(old, new):
    """As the original vit_jax calls it: zoom(grid, (gh_new/gh_old, gw_new/gw_old, 1), order=1)."""
    grid = np.random.default_rng(1).normal(size=(*old, 5)).astype(np.float32)
    want = scipy.ndimage.zoom(grid, (new[0] / old[0], new[1] / old[1], 1), order=1)
    assert want.shape == (*new, 5)
    posemb = jnp.asarray(np.concatenate([np.ones((1, 5)), grid.reshape(-1, 5)])[None])
    out = resample_posemb(posemb, new, old_grid=old, num_prefix_tokens=1, method="zoom")
    np.testing.assert_allclose(np.asarray(out[0, 1:]).reshape(want.shape), want, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_identity_and_dtype(method):
    posemb = jnp.asarray(np.random.default_rng(2).normal(size=(1, 1 + 12, 4)), jnp.bfloat16)
    assert resample_posemb(posemb, (3, 4), old_grid=(3, 4), num_prefix_tokens=1,
                           method=method) is posemb
    out = resample_posemb(posemb, (6, 8), old_grid=(3, 4), num_prefix_tokens=1, method=method)
    assert out.dtype == jnp.bfloat16 and out.shape == (1, 49, 4)


def test_errors_and_default():
    posemb = jnp.zeros((1, 16, 4))
    with pytest.raises(ValueError, match="valid: .*bicubic_antialias.*zoom"):
        resample_posemb(posemb, (2, 2), method="nearest")
    with pytest.raises(ValueError, match="square grid"):
        resample_posemb(jnp.zeros((1, 12, 4)), (2, 2))
    with pytest.raises(ValueError, match="does not match"):
        resample_posemb(posemb, (2, 2), old_grid=(3, 4))
    assert DEFAULT_METHOD in METHODS
    with pytest.raises(ValueError, match="unknown resample method"):
        create_model("mu/4", image_size=8, num_classes=2, posemb_resample="area")
    # A square grid is inferred when old_grid is omitted.
    assert resample_posemb(posemb, (2, 2)).shape == (1, 4, 4)


def test_sincos2d_is_recomputed_not_interpolated():
    pe = PositionEmbedding("sincos2d", (4, 4), 32, num_prefix=1, includes_prefix=True,
                           rngs=nnx.Rngs(0), resample_method="bilinear")
    table = pe((6, 5))
    np.testing.assert_array_equal(table[0, 1:], sincos2d(6, 5, 32))
    interpolated = resample_posemb(jnp.asarray(sincos2d(4, 4, 32))[None], (6, 5),
                                   method="bilinear")
    assert np.abs(np.asarray(table[0, 1:]) - np.asarray(interpolated[0])).max() > 0.1


def _randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0, 0.2, v.shape).astype(np.float32)
              for k, v in flat_params(model).items()}
    return load_params_into(model, params)


@pytest.mark.parametrize("method", [None, "zoom"])
def test_dynamic_resolution_equals_explicit_resampling(method):
    kw = dict(num_classes=3, depth=1, num_registers=1)
    if method:
        kw["posemb_resample"] = method
    m = _randomized(create_model("mu/4", image_size=16, **kw))
    big = create_model("mu/4", image_size=(24, 32), **kw)
    params = flat_params(m)
    params["posemb/pos_embedding"] = np.asarray(resample_posemb(
        params["posemb/pos_embedding"], (6, 8), old_grid=(4, 4), num_prefix_tokens=2,
        method=method or DEFAULT_METHOD))
    load_params_into(big, params)
    x = jax.random.normal(jax.random.key(0), (2, 24, 32, 3))
    got = nnx.jit(lambda model, x: model(x))(m, x)  # resampling traced inside jit
    np.testing.assert_allclose(got, big(x), atol=1e-5)
    assert np.abs(np.asarray(got) - np.asarray(m(x[:, :16, :16]))[:, None]).max() > 1e-3
