"""The model's matmuls: ``contract(spec, a, b, bias)``, an einsum of two operands plus a bias.

Why not plain ``jnp.einsum``: XLA:CPU runs a bfloat16 × bfloat16 → bfloat16 dot by converting
both operands to float32 (measured 263 GFLOP/s on an AMX Xeon), while bfloat16 × bfloat16 →
float32 stays in bfloat16 and runs on the matrix unit (1,339 GFLOP/s, same machine). Automatic
differentiation of the float32-output form gives mixed float32 × bfloat16 backward products, which
are converted again. So in bfloat16 on the CPU every product of the forward and backward pass is
written here as bfloat16 operands with float32 accumulation, the result rounded once to bfloat16
(as a GPU or TPU matmul does internally). The bias's gradient, a sum over every row, is a
product with a vector of ones too: XLA:CPU otherwise rewrites that bfloat16 reduction into a
slow tree of ``reduce-window``. Float32 operands, and every other backend, use plain einsum.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def contract(spec: str, a: Array, b: Array, bias: Array | None = None, *,
             out_dtype=None) -> Array:
    """``einsum(spec, a, b) + bias`` (bias along the output's last axis) in ``a``'s dtype,
    or in ``out_dtype`` (e.g. float32: the accumulated result, not rounded to ``a``'s dtype).

    ``spec``: explicit two-operand einsum subscripts without ``...``, e.g. ``"mk,kn->mn"``;
    ``b`` is cast to ``a``'s dtype (float32 parameters meet bfloat16 activations here).
    """
    b = b.astype(a.dtype)
    out_dtype = jnp.dtype(out_dtype or a.dtype)
    if a.dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
        bias = None if bias is None else bias.astype(jnp.float32)
        return _accumulating(spec, out_dtype, a, b, bias)
    y = jnp.einsum(spec, a, b, preferred_element_type=out_dtype)
    return y if bias is None else y + bias.astype(y.dtype)


def linear(x: Array, kernel: Array, bias: Array | None = None) -> Array:
    """``x @ kernel + bias`` over ``x``'s last axis, any leading shape (one 2-D product)."""
    y = contract("mk,kn->mn", x.reshape(-1, x.shape[-1]), kernel, bias)
    return y.reshape(*x.shape[:-1], kernel.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _accumulating(spec: str, out_dtype, a: Array, b: Array, bias: Array | None) -> Array:
    y = jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    return (y if bias is None else y + bias).astype(out_dtype)


def _forward(spec, out_dtype, a, b, bias):
    return _accumulating(spec, out_dtype, a, b, bias), (a, b, bias)


def _backward(spec, out_dtype, residuals, g):
    a, b, bias = residuals
    inputs, out = spec.split("->")
    sa, sb = inputs.split(",")
    g = g.astype(a.dtype)
    da = jnp.einsum(f"{out},{sb}->{sa}", g, b, preferred_element_type=jnp.float32)
    db = jnp.einsum(f"{sa},{out}->{sb}", a, g, preferred_element_type=jnp.float32)
    dbias = None
    if bias is not None:
        rows = jnp.ones(g.shape[:-1], g.dtype)
        dbias = jnp.einsum(f"{out},{out[:-1]}->{out[-1]}", g, rows,
                           preferred_element_type=jnp.float32)
    return da.astype(a.dtype), db.astype(b.dtype), dbias


_accumulating.defvjp(_forward, _backward)
