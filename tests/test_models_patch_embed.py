import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vit_jax.models.patch_embed import (
    PatchEmbed,
    _conv,
    conv_embed,
    grid_size,
    patchify,
    unpatchify,
)


@pytest.mark.parametrize("image,patch,channels", [
    ((32, 32), (16, 16), 3), ((24, 40), (8, 4), 3), ((12, 9), (3, 3), 1), ((6, 5), (1, 1), 3),
    ((16, 16), (16, 16), 2),
])
def test_conv_equals_unfold_plus_linear(image, patch, channels):
    conv = PatchEmbed(patch, channels, 24, rngs=nnx.Rngs(0), method="conv")
    unfold = PatchEmbed(patch, channels, 24, rngs=nnx.Rngs(0), method="patchify")
    nnx.update(unfold, nnx.state(conv))  # identical weights, bias randomised so it counts too
    conv.bias[...] = jax.random.normal(jax.random.key(3), (24,))
    unfold.bias[...] = conv.bias[...]
    x = jax.random.normal(jax.random.key(1), (2, *image, channels))
    a, b = conv(x), unfold(x)
    gh, gw = image[0] // patch[0], image[1] // patch[1]
    assert a.shape == (2, gh * gw, 24)
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)
    # and against a hand-written loop over patches: row-major grid, (row, col, channel) in a patch
    w = np.asarray(conv.kernel[...]).reshape(-1, 24)
    xn = np.asarray(x)
    manual = np.stack([
        xn[:, i * patch[0]:(i + 1) * patch[0], j * patch[1]:(j + 1) * patch[1]].reshape(2, -1) @ w
        for i in range(gh) for j in range(gw)], axis=1) + np.asarray(conv.bias[...])
    np.testing.assert_allclose(a, manual, atol=2e-5, rtol=1e-5)


def test_patch_count_and_params():
    assert grid_size((224, 224), (16, 16)) == (14, 14)
    assert grid_size((224, 224), (14, 14)) == (16, 16)
    assert grid_size((32, 48), (1, 1)) == (32, 48)
    embed = PatchEmbed((16, 16), 3, 768, rngs=nnx.Rngs(0))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(embed, nnx.Param)))
    assert n == 590_592  # seed 001: 3*16*16*768 + 768 for ViT-B/16


def test_patchify_order():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    p = patchify(x, (2, 2))
    assert p.shape == (2, 4, 4)
    np.testing.assert_array_equal(p[0, 1], [2, 3, 6, 7])  # second patch: top row, right half


def test_indivisible_image_names_both_sizes():
    embed = PatchEmbed((16, 16), 3, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"image size 30x32 is not divisible by patch size 16x16"):
        embed(jnp.zeros((1, 30, 32, 3)))


def test_unknown_method():
    with pytest.raises(ValueError, match="valid"):
        PatchEmbed((4, 4), 3, 8, rngs=nnx.Rngs(0), method="fold")


@pytest.mark.parametrize("image,patch,channels", [((32, 48), (16, 16), 3), ((12, 9), (4, 3), 1)])
def test_conv_embed_gradients_equal_the_convolutions(image, patch, channels):
    """The hand-written backward (matmuls) gives XLA's convolution gradients, images and kernel."""
    x = jax.random.normal(jax.random.key(0), (2, *image, channels))
    kernel = jax.random.normal(jax.random.key(1), (*patch, channels, 8))
    cotangent = jax.random.normal(jax.random.key(2), _conv(x, kernel).shape)
    want = jax.grad(lambda a, k: (_conv(a, k) * cotangent).sum(), argnums=(0, 1))(x, kernel)
    got = jax.grad(lambda a, k: (conv_embed(a, k) * cotangent).sum(), argnums=(0, 1))(x, kernel)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(conv_embed(x, kernel), _conv(x, kernel))


def test_unpatchify_inverts_patchify():
    x = jax.random.normal(jax.random.key(0), (2, 12, 9, 3))
    patches = patchify(x, (4, 3))
    assert patches.shape == (2, 9, 36)
    np.testing.assert_array_equal(unpatchify(patches, (3, 3), (4, 3)), x)
