"""``contract``: the model's matmuls. In bfloat16 on the CPU every product, forward and backward,
must have bfloat16 operands and a float32 result (the form XLA:CPU runs on the matrix unit), and
the values must be the float32 einsum's to bfloat16 rounding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models.contract import contract

SPECS = {  # the model's products: Dense / qkv, attention logits, attention output projection
    "mk,kn->mn": ((24, 16), (16, 8)),
    "bhqd,bhkd->bhqk": ((2, 3, 5, 4), (2, 3, 7, 4)),
    "bhnk,hkd->bnd": ((2, 3, 5, 4), (3, 4, 6)),
    "bnd,dhk->bhnk": ((2, 5, 6), (6, 3, 4)),
}


def operands(spec, dtype, bias=True, seed=0):
    ka, kb, kc = jax.random.split(jax.random.key(seed), 3)
    sa, sb = SPECS[spec]
    a = jax.random.normal(ka, sa).astype(dtype)
    b = jax.random.normal(kb, sb)  # float32, like a parameter
    out_last = jnp.einsum(spec, jnp.zeros(sa), jnp.zeros(sb)).shape[-1]
    c = jax.random.normal(kc, (out_last,)) if bias else None
    return a, b, c


def loss_and_grads(fn, a, b, c):
    probe = jax.random.normal(jax.random.key(9), fn(a, b, c).shape)
    return jax.value_and_grad(
        lambda a, b, c: jnp.vdot(fn(a, b, c).astype(jnp.float32), probe), argnums=(0, 1, 2))(
            a, b, c)


def reference(spec):
    """The float32 einsum of the same (bfloat16-valued) operands."""
    def fn(a, b, c):
        y = jnp.einsum(spec, a.astype(jnp.float32), b.astype(a.dtype).astype(jnp.float32))
        return y + c
    return fn


@pytest.mark.parametrize("spec", SPECS)
def test_bfloat16_values_and_gradients_are_the_float32_einsums_to_rounding(spec):
    a, b, c = operands(spec, jnp.bfloat16)
    y = contract(spec, a, b, c)
    assert y.dtype == jnp.bfloat16
    exact = reference(spec)(a, b, c)
    # one rounding to bfloat16 (8 bits of mantissa) of the float32 result
    np.testing.assert_allclose(y.astype(jnp.float32), exact, rtol=2 ** -8, atol=1e-6)
    assert float(jnp.max(jnp.abs(y.astype(jnp.float32) - exact))) > 0  # it did round

    (_, grads), (_, exact_grads) = (loss_and_grads(lambda a, b, c: contract(spec, a, b, c),
                                                   a, b, c),
                                    loss_and_grads(reference(spec), a, b, c))
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.float32, jnp.float32]
    for g, r in zip(grads, exact_grads, strict=True):
        scale = float(jnp.max(jnp.abs(r)))
        # bfloat16 cotangent and operands, float32 accumulation: a few bf16 ulps of the largest
        assert float(jnp.max(jnp.abs(g.astype(jnp.float32) - r))) < 3 * 2 ** -8 * scale


def test_out_dtype_float32_keeps_the_accumulated_result_unrounded():
    spec = "bhqd,bhkd->bhqk"
    a, b, _ = operands(spec, jnp.bfloat16, bias=False)
    y = contract(spec, a, b, out_dtype=jnp.float32)
    assert y.dtype == jnp.float32
    exact = jnp.einsum(spec, a.astype(jnp.float32), b.astype(a.dtype).astype(jnp.float32))
    np.testing.assert_allclose(y, exact, rtol=1e-6, atol=1e-6)
    rounded = contract(spec, a, b).astype(jnp.float32)
    assert float(jnp.max(jnp.abs(y - exact))) < float(jnp.max(jnp.abs(rounded - exact)))


@pytest.mark.parametrize("spec", SPECS)
def test_float32_is_plain_einsum_bit_for_bit(spec):
    a, b, c = operands(spec, jnp.float32)
    np.testing.assert_array_equal(contract(spec, a, b, c), jnp.einsum(spec, a, b) + c)
    grads = loss_and_grads(lambda a, b, c: contract(spec, a, b, c), a, b, c)[1]
    plain = loss_and_grads(lambda a, b, c: jnp.einsum(spec, a, b) + c, a, b, c)[1]
    for g, r in zip(grads, plain, strict=True):
        np.testing.assert_array_equal(g, r)


def dot_signatures(fn, *args) -> list[tuple[str, str, str]]:
    """(lhs, rhs, result) element types of every dot_general in ``fn``'s StableHLO."""
    text = jax.jit(fn).lower(*args).as_text()
    found = re.findall(r"stablehlo\.dot_general.*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)"
                       r" -> tensor<[^>]*x(\w+)>", text)
    assert found, "no dot_general in the lowered step"
    return found


def test_bfloat16_train_products_are_bf16_operands_with_float32_results():
    """The whole point on XLA:CPU: a bf16 -> bf16 product or a mixed f32 x bf16 product is
    run by converting to float32 (4-6x slower on an AMX Xeon); plain einsum makes both kinds."""
    assert jax.default_backend() == "cpu"
    for spec in SPECS:
        a, b, c = operands(spec, jnp.bfloat16)
        step = jax.grad(lambda a, b, c, s=spec: jnp.sum(contract(s, a, b, c).astype(
            jnp.float32) ** 2), argnums=(0, 1, 2))
        sigs = dot_signatures(step, a, b, c)
        assert len(sigs) == 4  # forward, two operand gradients, the bias gradient
        assert set(sigs) == {("bf16", "bf16", "f32")}, sigs
        plain = jax.grad(lambda a, b, c, s=spec: jnp.sum((jnp.einsum(
            s, a, b.astype(a.dtype)) + c.astype(a.dtype)).astype(jnp.float32) ** 2),
            argnums=(0, 1, 2))
        assert set(dot_signatures(plain, a, b, c)) != {("bf16", "bf16", "f32")}


def test_a_bfloat16_vit_train_step_has_no_bf16_output_or_mixed_products():
    """Every product of a bf16 ViT's gradient is bf16 x bf16 -> f32, except the float32 ones
    of the LayerNorm affine folded into the next kernel (parameters only)."""
    from flax import nnx

    from vit_jax import create_model

    model = create_model("mu/4", image_size=16, num_classes=5, width=32, depth=2, mlp_dim=64,
                         num_heads=4, dtype="bfloat16", patch_embed_method="patchify")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params, rest)(images, train=True) ** 2)

    sigs = dot_signatures(jax.grad(loss), params)
    assert set(sigs) == {("bf16", "bf16", "f32"), ("f32", "f32", "f32")}, set(sigs)
    assert sigs.count(("bf16", "bf16", "f32")) >= 2 * 3 * 5  # 2 blocks x 3 per product x 5+
