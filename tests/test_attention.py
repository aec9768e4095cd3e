"""Chunked (online-softmax) attention: exact against standard attention, and linear in memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import attention_out_and_grads, attention_temp_bytes
from vit_jax import create_model
from vit_jax.models.attention import (
    AUTO_CHUNK_MIN_TOKENS,
    _balanced_block,
    attend,
    choose_kernel,
    chunked_attention,
    cudnn_unsupported,
    standard_attention,
)

TINY = dict(image_size=16, num_classes=5, width=32, depth=2, mlp_dim=64, num_heads=4,
            head_zero_init=False)


def qkv(nq, nk=None, dtype=jnp.float32, b=2, h=3, d=8, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    nk = nq if nk is None else nk
    return (jax.random.normal(kq, (b, h, nq, d), dtype),  # the kernels' (B, H, N, hd) layout
            jax.random.normal(kk, (b, h, nk, d), dtype),
            jax.random.normal(kv, (b, h, nk, d), dtype))


def standard(q, k, v):
    return standard_attention(q, k, v)[0]


def test_standard_equals_textbook_softmax_attention():
    """The deferred normalisation (divide the output, not the weights) changes nothing."""
    q, k, v = (np.asarray(a, np.float64) for a in qkv(7, 9))
    logits = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out, got_weights = standard_attention(*qkv(7, 9), return_weights=True)
    np.testing.assert_allclose(out, np.einsum("bhqk,bhkd->bhqd", weights, v), atol=1e-6)
    np.testing.assert_allclose(got_weights, weights, atol=1e-6)
    assert standard_attention(*qkv(7, 9))[1] is None  # weights only when asked for


# (N, query_chunk, key_chunk): chunks that divide N, that need padding (7 = 2 x 4 - 1,
# 65 = 3 x 22 - 1, 300 = 8 x 38 - 4), larger than N, and different for queries and keys.
CASES = [(7, 4, 3), (7, 256, 256), (65, 32, 13), (300, 41, 128), (300, 100, 41)]


def test_cases_cover_padding():
    padded = [(-n % _balanced_block(n, qc), -n % _balanced_block(n, kc)) for n, qc, kc in CASES]
    assert any(p[0] for p in padded) and any(p[1] for p in padded)
    assert any(p == (0, 0) for p in padded)
    assert _balanced_block(1025, 256) == 205 and _balanced_block(257, 256) == 129


@pytest.mark.parametrize("n,query_chunk,key_chunk", CASES)
def test_chunked_equals_standard_forward_and_grads(n, query_chunk, key_chunk):
    q, k, v = qkv(n)
    chunked = lambda *a: chunked_attention(*a, query_chunk=query_chunk, key_chunk=key_chunk)
    out, grads = attention_out_and_grads(chunked, q, k, v)
    ref, ref_grads = attention_out_and_grads(standard, q, k, v)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


def test_cross_attention_single_query(nk=300, key_chunk=41):
    """The MAP head's shape: one probe attends over all tokens (8 key blocks of 38, 4 padded)."""
    q, k, v = qkv(1, nk)
    out, grads = attention_out_and_grads(
        lambda *a: chunked_attention(*a, key_chunk=key_chunk), q, k, v)
    ref, ref_grads = attention_out_and_grads(standard, q, k, v)
    assert out.shape == (2, 3, 1, 8)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


def test_bfloat16_keeps_dtype_and_accumulates_in_float32():
    q, k, v = qkv(65, dtype=jnp.bfloat16)
    out, grads = attention_out_and_grads(
        lambda *a: chunked_attention(*a, query_chunk=16, key_chunk=16), q, k, v)
    assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    exact, exact_grads = attention_out_and_grads(
        standard, *(x.astype(jnp.float32) for x in (q, k, v)))
    bf16_standard = standard(q, k, v)
    # float32 accumulation across 5 key blocks: no worse than one-shot bf16 standard attention.
    err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - exact)))
    assert err < 2e-2
    assert err <= 1.5 * float(jnp.max(jnp.abs(bf16_standard.astype(jnp.float32) - exact)))
    for g, r in zip(grads, exact_grads, strict=True):
        assert np.all(np.isfinite(g.astype(jnp.float32)))
        np.testing.assert_allclose(g.astype(jnp.float32), r, atol=0.1, rtol=0.05)


def test_vit_chunked_equals_standard():
    """17 tokens in blocks of at most 8 queries x 6 keys: padded blocks in every layer, under
    scan + full remat (a checkpoint around the chunked kernel's own), with a register token and
    the MAP head (whose one-query attention stays standard)."""
    opts = dict(scan=True, remat_policy="full", pool="map", num_registers=1)
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
    y = jnp.array([0, 1, 2])
    models = {a: create_model("mu/4", **TINY, **opts, attention=a, attention_query_chunk=8,
                              attention_key_chunk=6) for a in ("standard", "chunked")}

    def loss(model):
        logits = model(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)), logits

    grad = nnx.jit(nnx.value_and_grad(loss, has_aux=True))
    (l_std, logits_std), g_std = grad(models["standard"])
    (l_chk, logits_chk), g_chk = grad(models["chunked"])
    np.testing.assert_allclose(logits_chk, logits_std, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(l_chk, l_std, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
                 nnx.to_pure_dict(nnx.state(g_chk)), nnx.to_pure_dict(nnx.state(g_std)))


def test_return_weights_falls_back_to_standard():
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    chk = create_model("mu/4", **TINY, attention="chunked", attention_query_chunk=4)
    std = create_model("mu/4", **TINY)
    _, extras = chk(x, return_attention=True)
    _, ref = std(x, return_attention=True)
    assert extras["attention"].shape == (2, 2, 4, 17, 17)
    np.testing.assert_allclose(extras["attention"], ref["attention"], atol=1e-6)


def test_auto_picks_chunked_for_long_sequences_on_cpu():
    def uses_loop(n):
        return "scan" in str(jax.make_jaxpr(lambda *a: attend(*a, "auto"))(*qkv(n, b=1, h=1)))

    assert not uses_loop(65)
    assert uses_loop(AUTO_CHUNK_MIN_TOKENS)
    q, k, v = qkv(AUTO_CHUNK_MIN_TOKENS + 1, b=1, h=2)
    np.testing.assert_allclose(attend(q, k, v, "auto"), standard(q, k, v), atol=1e-5)


@pytest.mark.parametrize("backend,dtype,head_dim,keys,kernel", [
    ("gpu", jnp.bfloat16, 64, 196, "cudnn"),
    ("gpu", jnp.float16, 128, 4096, "cudnn"),
    # Odd counts: cuDNN raised "Unsupported sequence length" for 197, 257 and 4097 on an H200.
    ("gpu", jnp.bfloat16, 64, 197, "standard"),
    ("gpu", jnp.bfloat16, 64, 4097, "chunked"),
    ("gpu", jnp.float32, 64, 196, "standard"),  # cuDNN's fused kernel is half precision only
    ("gpu", jnp.float32, 64, 4096, "chunked"),
    ("gpu", jnp.bfloat16, 60, 196, "standard"),  # head_dim not a multiple of 8
    ("gpu", jnp.bfloat16, 256, 4096, "chunked"),  # head_dim over 128
    ("tpu", jnp.bfloat16, 64, 197, "standard"),
    ("cpu", jnp.float32, 64, AUTO_CHUNK_MIN_TOKENS - 1, "standard"),
    ("cpu", jnp.float32, 64, AUTO_CHUNK_MIN_TOKENS, "chunked"),
])
def test_auto_kernel_by_backend_dtype_and_length(backend, dtype, head_dim, keys, kernel):
    assert choose_kernel(backend, dtype, head_dim, keys) == kernel


def test_auto_needs_even_queries_too_for_cudnn():
    assert choose_kernel("gpu", jnp.bfloat16, 64, 196, num_queries=1) == "standard"


def test_models_default_to_auto_attention():
    model = create_model("mu/4", **TINY)
    assert {b.attn.implementation for b in model.encoder.blocks} == {"auto"}


def test_chunked_forward_backward_memory_is_linear():
    """XLA's compiled temp memory of forward+backward: N² for standard, ~N for chunked."""
    std = {n: attention_temp_bytes(standard, n) for n in (1024, 2048, 4096)}
    chk = {n: attention_temp_bytes(chunked_attention, n) for n in (1024, 2048, 4096)}
    # measured 1/16.6 with jax 0.10 and 1/8.4 with jax 0.12, whose standard kernel keeps one
    # N x N matrix fewer (chunked: 30.9 MiB with both)
    assert chk[4096] < std[4096] / 6
    assert std[2048] > 3.5 * std[1024] and std[4096] > 3.5 * std[2048]  # quadratic: 4x
    assert chk[2048] < 2.2 * chk[1024] and chk[4096] < 2.2 * chk[2048]  # linear: ~1.8x
    assert std[2048] > 2048**2 * 4 * 4  # at least one (heads, N, N) f32 matrix


@pytest.mark.parametrize("kw", [dict(attention_query_chunk=0), dict(attention_key_chunk=1.5)])
def test_bad_chunk_sizes_name_the_fix(kw):
    with pytest.raises(ValueError, match="must be a positive int"):
        create_model("mu/4", **TINY, **kw)


def test_auto_takes_a_plain_kernel_for_packed_sequences():
    """Segment masks go to the plain-JAX kernels, cuDNN's fused one takes none here."""
    assert choose_kernel("gpu", jnp.bfloat16, 64, 196, segmented=True) == "standard"
    assert choose_kernel("gpu", jnp.bfloat16, 64, 4096, segmented=True) == "chunked"


@pytest.mark.parametrize("backend,dtype,head_dim,why", [
    ("cpu", jnp.bfloat16, 64, "needs a GPU (this backend: cpu)"),
    ("tpu", jnp.bfloat16, 64, "needs a GPU (this backend: tpu)"),
    ("gpu", jnp.float32, 64, "bfloat16 or float16 compute dtype, got float32"),
    ("gpu", jnp.bfloat16, 60, "multiple of 8 up to 128, got 60"),
    ("gpu", jnp.float16, 256, "multiple of 8 up to 128, got 256"),
    ("gpu", jnp.bfloat16, 128, None),
])
def test_cudnn_unsupported_names_the_reason(backend, dtype, head_dim, why):
    """One rule for ``auto``'s choice and for refusing ``attention="cudnn"``."""
    got = cudnn_unsupported(backend, dtype, head_dim)
    assert got is None if why is None else why in got
    assert (choose_kernel(backend, dtype, head_dim, 196) == "cudnn") == (why is None)


def test_cudnn_attention_takes_packed_self_attention_only():
    q, k, v = qkv(6)
    ids = jnp.ones((2, 6), jnp.int32)
    with pytest.raises(ValueError, match="packed self-attention only"):
        attend(q, k, v, "cudnn", segment_ids=(ids, ids))
