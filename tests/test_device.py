"""Correctness on whatever backend runs the tests: the ``device`` marker's set.

On CPU these run with the suite; ``scripts/device_check.sh`` runs ``pytest -m device`` on a GPU
(``JAX_PLATFORMS=cuda,cpu``), where the kernels list grows by cuDNN's fused attention and
``dtype="auto"`` means bfloat16. Tolerances, relative to the norm of a float32 reference
(``‖got − ref‖ / ‖ref‖``): float32 kernels 1e-5 (f32 matmuls at "highest" precision, no TF32),
bfloat16 2e-2 for attention outputs and 5e-2 for gradients (bf16 keeps 8 significant bits:
4e-3 relative per rounding; softmax and the backward pass compound a few), 3e-2 for the logits
of a 4-layer model (0.7-1.2e-2 measured with bf16 activations on CPU).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import attention_out_and_grads
from vit_jax import create_model, pack_images, sharding
from vit_jax.models.attention import attend, cudnn_attention, standard_attention
from vit_jax.models.vit import compute_dtype
from vit_jax.train_step import make_train_step

pytestmark = pytest.mark.device

BACKEND = jax.default_backend()
# The kernels this backend runs: cuDNN's only on GPU (it is a GPU library).
KERNELS = ["standard", "xla", "chunked"] + (["cudnn"] if BACKEND == "gpu" else [])
F32_TOL, BF16_TOL, BF16_GRAD_TOL, BF16_MODEL_TOL = 1e-5, 2e-2, 5e-2, 3e-2


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.isfinite(got)), "non-finite values"
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def kernel(name: str):
    """(q, k, v) -> out in (B, H, N, hd), through one named kernel."""
    return lambda q, k, v: attend(q, k, v, name, query_chunk=64, key_chunk=96)


def qkv_ct(seed: int, n: int):
    ks = jax.random.split(jax.random.key(seed), 4)
    q, k, v = (jax.random.normal(key, (2, 4, n, 64), jnp.float32) for key in ks[:3])
    return q, k, v, jax.random.normal(ks[3], q.shape, jnp.float32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", KERNELS)
def test_attention_kernels_agree_forward_and_grads(name, dtype):
    """Each kernel against float32 standard attention, on 197 tokens (the B/16 length, not a
    multiple of any block) with 64-wide heads; cuDNN runs half precision only, and serves 197
    padded by one masked key (``cudnn_attention``)."""
    n = 197
    if name == "cudnn" and dtype == "float32":
        dtype = "bfloat16"
    q, k, v, ct = qkv_ct(hash((name, dtype)) % 2**31, n)
    with jax.default_matmul_precision("highest"):
        ref, ref_grads = attention_out_and_grads(lambda *a: standard_attention(*a)[0],
                                                 q, k, v, ct)
        cast = [x.astype(dtype) for x in (q, k, v)]
        out, grads = attention_out_and_grads(kernel(name), *cast, ct)
    assert out.dtype == jnp.dtype(dtype) and out.shape == ref.shape
    tol, grad_tol = (F32_TOL, F32_TOL) if dtype == "float32" else (BF16_TOL, BF16_GRAD_TOL)
    assert rel_err(out, ref) < tol
    for g, r in zip(grads, ref_grads, strict=True):
        assert rel_err(g, r) < grad_tol


@pytest.mark.parametrize("num_queries", [197, 196])
def test_odd_length_padded_to_even_matches_standard(num_queries):
    """``cudnn_attention``'s padding (one masked key, one dropped query row) keeps the output
    and gradients of the unpadded attention: on GPU through cuDNN in bf16, on CPU through XLA
    in f32; 196 queries over 197 keys pads the keys alone."""
    gpu = BACKEND == "gpu"
    dtype = jnp.bfloat16 if gpu else jnp.float32
    q, k, v, _ = qkv_ct(3, 197)
    q = q[:, :, :num_queries]
    ct = jax.random.normal(jax.random.key(4), q.shape, jnp.float32)
    padded = functools.partial(cudnn_attention, implementation="cudnn" if gpu else "xla")
    with jax.default_matmul_precision("highest"):
        ref, ref_grads = attention_out_and_grads(lambda *a: standard_attention(*a)[0],
                                                 q, k, v, ct)
        out, grads = attention_out_and_grads(padded, *(x.astype(dtype) for x in (q, k, v)), ct)
    assert out.shape == ref.shape
    assert rel_err(out, ref) < (BF16_TOL if gpu else F32_TOL)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.shape == r.shape
        assert rel_err(g, r) < (BF16_GRAD_TOL if gpu else F32_TOL)


def test_auto_kernel_of_the_default_model():
    """What ``attention="auto"`` compiles to in the default B/16-length model on this backend:
    cuDNN's custom call only at an even token count on GPU (196 without the class token)."""
    x = jnp.zeros((2, 56, 56, 3))
    kw = dict(image_size=56, num_classes=4, depth=1, head_zero_init=False)
    for class_token, pool in ((True, "cls"), (False, "gap")):
        model = create_model("S/4", **kw, class_token=class_token, pool=pool)
        graphdef, state = nnx.split(model)
        forward = functools.partial(lambda g, s: nnx.merge(g, s)(x), graphdef)
        hlo = jax.jit(forward).lower(state).compile().as_text()
        assert ("cudnn$fmha" in hlo) == (BACKEND == "gpu" and not class_token), class_token


def test_cudnn_attention_serves_the_class_token_and_packed_models():
    """``attention="cudnn"`` on B/16's odd 197-token length, and on packed sequences (NaViT:
    images of several sizes per sequence, odd and even lengths, padding). On GPU: cuDNN's
    custom call is in the compiled forward and backward, and the logits (per image, packed)
    match ``standard`` to bf16 tolerance. Elsewhere the model refuses the option when it is
    built, naming the backend."""
    kw = dict(image_size=56, num_classes=4, depth=2, head_zero_init=False)
    if BACKEND != "gpu":
        with pytest.raises(ValueError, match=f"needs a GPU \\(this backend: {BACKEND}\\)"):
            create_model("S/4", **kw, attention="cudnn")
        return
    x = jax.random.normal(jax.random.key(2), (2, 56, 56, 3))
    fused, plain = (create_model("S/4", **kw, attention=a) for a in ("cudnn", "standard"))
    nnx.update(plain, nnx.state(fused, nnx.Param))
    graphdef, state = nnx.split(fused)
    loss = lambda s: nnx.merge(graphdef, s)(x).astype(jnp.float32).sum()  # noqa: E731
    hlo = jax.jit(jax.grad(loss)).lower(state).compile().as_text()
    assert hlo.count("cudnn$fmha") >= 2  # forward and backward
    got, ref = nnx.jit(lambda m: m(x))(fused), nnx.jit(lambda m: m(x))(plain)
    assert rel_err(got, ref) < BF16_MODEL_TOL
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((h, w, 3)).astype(np.float32)
              for h, w in ((64, 64), (48, 64), (32, 32), (96, 64), (48, 48), (16, 32))]
    kw = dict(kw, image_size=96, class_token=False, pool="gap", posemb="sincos2d")
    fused, plain = (create_model("S/8", **kw, attention=a) for a in ("cudnn", "standard"))
    nnx.update(plain, nnx.state(fused, nnx.Param))
    graphdef, state = nnx.split(fused)
    loss = lambda s, b: nnx.merge(graphdef, s)(b).astype(jnp.float32).sum()  # noqa: E731
    for seq_len in (192, 193):
        batch, placement = pack_images(images, patch_size=8, seq_len=seq_len, max_images=3)
        hlo = jax.jit(jax.grad(loss)).lower(state, batch).compile().as_text()
        assert hlo.count("cudnn$fmha") >= 2, seq_len
        got = nnx.jit(lambda m, b: m(b))(fused, batch)
        ref = nnx.jit(lambda m, b: m(b))(plain, batch)
        rows = tuple(np.array(placement).T)
        assert rel_err(got[rows], ref[rows]) < BF16_MODEL_TOL, seq_len


def test_auto_dtype_model_matches_float32():
    """The default model (``dtype="auto"``: bf16 activations on GPU/TPU) against the same
    parameters in float32; on CPU both are float32 and must agree to rounding."""
    x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
    kw = dict(image_size=64, num_classes=10, depth=4, head_zero_init=False)
    auto = create_model("S/16", **kw)
    f32 = create_model("S/16", **kw, dtype="float32")
    nnx.update(f32, nnx.state(auto, nnx.Param))
    with jax.default_matmul_precision("highest"):
        got, ref = nnx.jit(lambda m: m(x))(auto), nnx.jit(lambda m: m(x))(f32)
    resolved = compute_dtype("auto")
    assert resolved == (jnp.float32 if BACKEND == "cpu" else jnp.bfloat16)
    assert rel_err(got, ref) < (F32_TOL * 10 if resolved == jnp.float32 else BF16_MODEL_TOL)


def test_default_train_step_learns_on_the_device():
    """Twenty AdamW steps of the default (auto dtype, auto attention) model on one fixed batch
    drive its loss far down: the whole step, backward pass and optimizer, runs on the device."""
    from vit_jax import train_state

    create = train_state.state_factory(
        lambda: create_model("Ti/8", image_size=32, num_classes=4, depth=2),
        dict(name="adamw", lr=3e-3, weight_decay=0.0, schedule="constant"))
    model, optimizer = create()
    graphdef, state = nnx.split((model, optimizer))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.standard_normal((16, 32, 32, 3)), jnp.float32),
             "labels": jax.nn.one_hot(jnp.asarray(rng.integers(0, 4, 16)), 4)}
    step = jax.jit(make_train_step(graphdef), donate_argnums=0)
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch, jax.random.key(0))
        losses.append(float(metrics["train/loss"]))
    assert losses[-1] < 0.3 * losses[0], losses
    assert next(iter(jax.tree.leaves(state))).devices() == {jax.devices()[0]}


def test_sharded_step_on_a_one_device_mesh_equals_the_plain_step():
    """The trainer's GSPMD path (named shardings over a data x fsdp mesh of the default
    backend's first device) computes what the plain jitted step does: bitwise on CPU; on a GPU,
    where two compilations may pick different cuBLAS/cuDNN algorithms, to float32 rounding."""
    from vit_jax import train_state

    create = train_state.state_factory(
        lambda: create_model("Ti/8", image_size=32, num_classes=4, depth=2),
        dict(name="adamw", lr=1e-3, weight_decay=0.05, schedule="constant"))
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1}, jax.devices()[:1])
    graphdef, sharded_state, shardings = sharding.create_sharded_state(create, mesh)
    plain_state = jax.jit(lambda: nnx.split(create())[1])()
    rng = np.random.default_rng(1)
    batch = {"image": jnp.asarray(rng.standard_normal((8, 32, 32, 3)), jnp.float32),
             "labels": jax.nn.one_hot(jnp.asarray(rng.integers(0, 4, 8)), 4)}
    step_fn = make_train_step(graphdef)
    plain, m_plain = jax.jit(step_fn)(plain_state, batch, jax.random.key(0))
    sharded, m_sharded = sharding.jit_train_step(step_fn, shardings, mesh)(
        sharded_state, sharding.shard_batch(batch, mesh), jax.random.key(0))
    same = (np.testing.assert_array_equal if BACKEND == "cpu" else
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6))
    same(float(m_plain["train/loss"]), float(m_sharded["train/loss"]))
    jax.tree.map(lambda a, b: same(raw(a), raw(b)), plain, sharded)


def raw(x: jax.Array) -> np.ndarray:
    """Host copy of an array, a PRNG key as its key data."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)
