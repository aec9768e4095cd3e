"""FlexiViT PI-resize: tokens survive a patch-size change (exactly when growing the patch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import create_model
from vit_jax.models.flexi import change_patch_size, resize_matrix, resize_patch_kernel
from vit_jax.models.resample import resample_posemb, resize_grid
from vit_jax.params import flat_params, load_params_into


def resize_kernel_as_image(kernel, new, method="bilinear"):
    """The naive alternative: interpolate the kernel and rescale by the pixel-count ratio."""
    ph, pw, c, d = kernel.shape
    out = resize_grid(jnp.asarray(kernel).reshape(ph, pw, c * d), new, method)
    return np.asarray(out, np.float64).reshape(*new, c, d) * (ph * pw) / (new[0] * new[1])


def tokens(patch, kernel):
    return np.einsum("hwc,hwcd->d", np.asarray(patch, np.float64), np.asarray(kernel, np.float64))


def test_resize_matrix_is_the_resize():
    b = resize_matrix((1, 2), (1, 4), "bilinear")  # torch/TF half-pixel bilinear, 2 -> 4
    np.testing.assert_allclose(b, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-7)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    want = np.asarray(resize_grid(jnp.asarray(x)[..., None], (4, 7), "bicubic"))[..., 0]
    np.testing.assert_allclose(resize_matrix((3, 5), (4, 7), "bicubic") @ x.ravel(),
                               want.ravel(), atol=1e-6)


@pytest.mark.parametrize("old,new,method", [((4, 4), (8, 8), "bilinear"),
                                            ((3, 4), (5, 9), "bilinear"),
                                            ((4, 4), (6, 6), "bicubic_antialias")])
def test_pi_resize_upsampling_preserves_tokens(old, new, method):
    rng = np.random.default_rng(1)
    kernel = jnp.asarray(rng.normal(size=(*old, 3, 7)), jnp.float32)
    new_kernel = resize_patch_kernel(kernel, new, method)
    assert new_kernel.shape == (*new, 3, 7) and new_kernel.dtype == jnp.float32
    for _ in range(3):
        x = rng.normal(size=(*old, 3)).astype(np.float32)
        x_big = resize_grid(jnp.asarray(x), new, method)
        want = tokens(x, kernel)
        np.testing.assert_allclose(tokens(x_big, new_kernel), want, rtol=1e-4,
                                   atol=1e-4 * np.abs(want).max())
    # Resizing the kernel like an image does not preserve tokens (why PI-resize exists).
    naive = resize_kernel_as_image(kernel, new, method)
    assert np.abs(tokens(x_big, naive) - want).max() > 0.05 * np.abs(want).max()


def test_pi_resize_downsampling_is_least_squares():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(4, 4, 1, 5)).astype(np.float32)
    new_kernel = np.asarray(resize_patch_kernel(jnp.asarray(kernel), 2), np.float64)
    b = resize_matrix((4, 4), (2, 2))  # 2x bilinear shrink = mean of each 2x2 block
    w, w_new = kernel.reshape(16, 5).astype(np.float64), new_kernel.reshape(4, 5)
    # Exact for patches in the range of B^T: here, patches constant on each 2x2 block.
    y = rng.normal(size=(2, 2))
    x = np.kron(y, np.ones((2, 2)))
    np.testing.assert_allclose(resize_matrix((4, 4), (2, 2)) @ x.ravel(), y.ravel(), atol=1e-6)
    np.testing.assert_allclose(tokens(y[..., None], new_kernel), tokens(x[..., None], kernel),
                               atol=1e-5)
    # Otherwise the normal equations hold: B (B^T w' - w) = 0, and no kernel does better.
    residual = b.T @ w_new - w
    np.testing.assert_allclose(b @ residual, 0, atol=1e-5)
    def misfit(k):
        return np.linalg.norm(b.T @ np.asarray(k, np.float64).reshape(4, 5) - w)

    # A 2x shrink averages 2x2 blocks (B = J/4 per block), where the rescaled naive resize,
    # 4 B w, is exactly pinv(B^T) w: a tie up to float32 rounding, never better.
    assert misfit(new_kernel) <= misfit(resize_kernel_as_image(kernel, (2, 2))) * (1 + 1e-6)
    assert misfit(new_kernel) < misfit(w_new + 0.01 * rng.normal(size=w_new.shape))


def test_identity_and_errors():
    kernel = jnp.ones((4, 4, 3, 2))
    assert resize_patch_kernel(kernel, (4, 4)) is kernel
    with pytest.raises(ValueError, match="kernel"):
        resize_patch_kernel(jnp.ones((4, 4, 3)), 8)
    with pytest.raises(ValueError, match="new_patch"):
        resize_patch_kernel(kernel, 0)


@pytest.fixture(scope="module")
def model():
    m = create_model("mu/4", image_size=16, num_classes=5, depth=2, num_registers=1)
    rng = np.random.default_rng(3)
    return load_params_into(m, {k: rng.normal(0, 0.2, v.shape).astype(np.float32)
                                for k, v in flat_params(m).items()})


def patchwise_resize(images, patch, new_patch):
    """Each patch resized on its own: what the PI-resize preserves exactly."""
    b, h, w, c = images.shape
    (ph, pw), (nh, nw) = patch, new_patch
    p = images.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    p = resize_grid(p, (nh, nw), "bilinear")
    return p.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // ph * nh, w // pw * nw, c)


def test_change_patch_size_upsampling_preserves_logits(model):
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    big = change_patch_size(model, 8, image_size=32)  # same 4x4 grid: posemb unchanged
    assert big.patch_size == (8, 8) and big.posemb.grid == (4, 4) and model.patch_size == (4, 4)
    want = np.asarray(model(x))
    np.testing.assert_allclose(big(patchwise_resize(x, (4, 4), (8, 8))), want, atol=1e-5)
    # A whole-image resize differs from the patchwise one only at patch borders.
    whole = big(jax.image.resize(x, (2, 32, 32, 3), "linear", antialias=False))
    assert np.corrcoef(np.asarray(whole).ravel(), want.ravel())[0, 1] > 0.99
    np.testing.assert_array_equal(model(x), want)  # the original model is untouched


@pytest.mark.parametrize("patch,grid", [(8, (2, 2)), (2, (8, 8))])
def test_change_patch_size_at_fixed_resolution(model, patch, grid):
    m = change_patch_size(model, patch, posemb_method="bilinear")
    assert m.patch_embed.kernel.shape == (patch, patch, 3, 32) and m.grid == grid
    want_pe = resample_posemb(model.posemb.pos_embedding[...], grid, num_prefix_tokens=2,
                              method="bilinear")
    np.testing.assert_array_equal(m.posemb.pos_embedding[...], want_pe)
    out = m(jax.random.normal(jax.random.key(1), (2, 16, 16, 3)))
    assert out.shape == (2, 5) and np.isfinite(out).all()
