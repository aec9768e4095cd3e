import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vit_jax import create_model
from vit_jax.models.posemb import PositionEmbedding, sincos2d


def reference_sincos(gh, gw, d):
    """The formula written out element by element."""
    q = d // 4
    out = np.zeros((gh * gw, d))
    for row in range(gh):
        for col in range(gw):
            for k in range(q):
                w = 1.0 / 10000 ** (k / (q - 1))
                i = row * gw + col
                out[i, k], out[i, q + k] = math.sin(col * w), math.cos(col * w)
                out[i, 2 * q + k], out[i, 3 * q + k] = math.sin(row * w), math.cos(row * w)
    return out


@pytest.mark.parametrize("gh,gw,d", [(4, 4, 16), (3, 5, 8), (7, 2, 32)])
def test_sincos_formula_and_determinism(gh, gw, d):
    table = sincos2d(gh, gw, d)
    assert table.shape == (gh * gw, d) and table.dtype == np.float32
    np.testing.assert_allclose(table, reference_sincos(gh, gw, d), atol=1e-6)
    np.testing.assert_array_equal(table, sincos2d(gh, gw, d))


def test_sincos_known_values():
    t = sincos2d(2, 3, 8)  # omega = [1, 1e-4]
    np.testing.assert_allclose(t[5], [math.sin(2), math.sin(2e-4), math.cos(2), math.cos(2e-4),
                                      math.sin(1), math.sin(1e-4), math.cos(1), math.cos(1e-4)],
                               rtol=1e-6)


@pytest.mark.parametrize("width", [6, 4, 30])
def test_sincos_bad_width(width):
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos2d(2, 2, width)
    with pytest.raises(ValueError, match="multiple of 4"):
        create_model("mu/4", image_size=8, num_classes=2, width=width, num_heads=1,
                     posemb="sincos2d")


def test_sincos_is_not_a_parameter():
    learn = create_model("mu/4", image_size=16, num_classes=3, posemb="learn")
    fixed = create_model("mu/4", image_size=16, num_classes=3, posemb="sincos2d")
    none = create_model("mu/4", image_size=16, num_classes=3, posemb="none")
    n = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    assert n(learn) - n(fixed) == (16 + 1) * 32
    assert n(fixed) == n(none)


@pytest.mark.parametrize("includes_prefix", [True, False])
def test_layouts(includes_prefix):
    pe = PositionEmbedding("learn", (3, 4), 8, num_prefix=2, includes_prefix=includes_prefix,
                           rngs=nnx.Rngs(0))
    assert pe((3, 4)).shape == (1, 12 + (2 if includes_prefix else 0), 8)
    fixed = PositionEmbedding("sincos2d", (3, 4), 8, num_prefix=2,
                              includes_prefix=includes_prefix, rngs=nnx.Rngs(0))
    table = fixed((3, 4))
    if includes_prefix:  # prefix slots get zeros (MoCo v3 convention)
        np.testing.assert_array_equal(table[0, :2], 0)
    np.testing.assert_allclose(table[0, -12:], sincos2d(3, 4, 8))


@pytest.mark.parametrize("includes_prefix", [True, False])
def test_layout_changes_where_posemb_is_added(includes_prefix):
    m = create_model("mu/4", image_size=8, num_classes=2, posemb="learn",
                     posemb_includes_prefix=includes_prefix)
    m.cls_token[...] = jnp.ones_like(m.cls_token[...])
    tokens = m.embed(jnp.zeros((1, 8, 8, 3)))
    pe = m.posemb.pos_embedding[...]
    expected_cls = 1 + (pe[0, 0] if includes_prefix else 0)
    np.testing.assert_allclose(tokens[0, 0], expected_cls, atol=1e-6)


def test_non_square_grid_model():
    m = create_model("mu/4", image_size=(8, 16), num_classes=2, posemb="sincos2d")
    out, extras = m(jnp.zeros((2, 8, 16, 3)), return_extras=True)
    assert out.shape == (2, 2) and extras["tokens"].shape == (2, 1 + 2 * 4, 32)
