import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vit_jax import create_model
from vit_jax.models.encoder import REMAT_POLICIES, stack_blocks, unstack_blocks
from vit_jax.models.vit import compute_dtype

TINY = dict(image_size=16, num_classes=5, width=32, depth=2, mlp_dim=64, num_heads=4)


def tiny(**kw):
    return create_model("mu/4", **{**TINY, **kw})


def images(n=3, size=16, seed=0, c=3):
    return jax.random.normal(jax.random.key(seed), (n, size, size, c))


@pytest.mark.parametrize("class_token,registers,pool", [
    (True, 0, "cls"), (False, 0, "gap"), (True, 4, "cls"), (False, 2, "map"), (True, 0, "none")])
def test_front_end_and_output_shapes(class_token, registers, pool):
    m = tiny(class_token=class_token, num_registers=registers, pool=pool)
    prefix = int(class_token) + registers
    assert m.embed(images()).shape == (3, 16 + prefix, 32)
    logits, extras = m(images(), return_extras=True)
    assert extras["tokens"].shape == (3, 16 + prefix, 32)
    assert logits.shape == ((3, 16 + prefix, 5) if pool == "none" else (3, 5))
    assert logits.dtype == jnp.float32


def test_class_token_broadcasts_without_leakage():
    m = tiny(head_zero_init=False)
    x = images(4)
    base, extras = m(x, return_extras=True)
    np.testing.assert_array_equal(m.embed(x)[:, 0] - m.posemb(m.grid)[0, 0],
                                  jnp.broadcast_to(m.cls_token[0, 0], (4, 32)))
    changed = x.at[2].set(jax.random.normal(jax.random.key(9), x.shape[1:]))
    out = m(changed)
    others = [0, 1, 3]
    np.testing.assert_array_equal(np.asarray(out)[others], np.asarray(base)[others])
    assert not np.allclose(out[2], base[2])


def test_head_zero_init_and_pre_logits():
    assert np.all(tiny()(images()) == 0)  # zero-init head: uniform predictions at step 0
    m = tiny(representation_size=24, head_zero_init=False)
    logits, extras = m(images(), return_extras=True)
    assert extras["pre_logits"].shape == (3, 24) and np.all(np.abs(extras["pre_logits"]) <= 1)
    assert m.head.kernel.shape == (24, 5)


def test_attention_weights():
    m = tiny(num_registers=1)
    _, extras = m(images(), return_attention=True)
    att = extras["attention"]
    assert att.shape == (2, 3, 4, 18, 18)  # (depth, batch, heads, tokens, tokens)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    _, scanned = tiny(num_registers=1, scan=True)(images(), return_attention=True)
    np.testing.assert_allclose(scanned["attention"], att, atol=1e-5)


@pytest.mark.parametrize("policy", list(REMAT_POLICIES))
def test_scan_equals_loop(policy):
    kw = dict(layerscale=0.1, qk_norm=True, remat_policy=policy, head_zero_init=False)
    loop, scan = tiny(**kw), tiny(scan=True, **kw)
    assert scan.encoder.blocks.attn.query["kernel"].shape == (2, 32, 4, 8)  # stacked on layers
    x = images()

    def loss(model):
        return jnp.mean(model(x) ** 2)

    l1, g1 = nnx.value_and_grad(loss)(loop)
    l2, g2 = nnx.value_and_grad(loss)(scan)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    stacked_g1 = jax.tree.map(lambda *xs: jnp.stack(xs), *[g1["encoder"]["blocks"][i]
                                                          for i in range(2)])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
                 stacked_g1, g2["encoder"]["blocks"])


def test_stack_unstack_round_trip():
    loop = tiny(head_zero_init=False)
    scan = tiny(scan=True, head_zero_init=False)
    stacked = stack_blocks(list(loop.encoder.blocks))
    jax.tree.map(np.testing.assert_array_equal, nnx.state(stacked), nnx.state(scan.encoder.blocks))
    back = unstack_blocks(scan.encoder.blocks)
    for a, b in zip(back, loop.encoder.blocks, strict=True):
        jax.tree.map(np.testing.assert_array_equal, nnx.state(a), nnx.state(b))
    # converting a loop model's blocks gives a scan model with the same outputs
    loop.encoder.blocks = nnx.List(unstack_blocks(stack_blocks(list(loop.encoder.blocks))))
    np.testing.assert_allclose(loop(images()), scan(images()), atol=1e-5)


OPTIONS = [
    dict(), dict(scan=True), dict(pool="gap", class_token=False), dict(pool="map"),
    dict(num_registers=2), dict(posemb="sincos2d"), dict(posemb="none"),
    dict(posemb_includes_prefix=False), dict(layerscale=1e-5), dict(qk_norm=True),
    dict(representation_size=16), dict(dropout=0.1, attn_dropout=0.1, drop_path=0.2),
    dict(dropout=0.1, drop_path=0.2, scan=True, remat_policy="full"),
    dict(remat_policy="dots"), dict(attention="xla"), dict(patch_embed_method="patchify"),
    dict(dtype="bfloat16"), dict(patch_size=1, image_size=8),
]


@pytest.mark.parametrize("opts", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_finite_gradients_through_every_option(opts):
    m = tiny(head_zero_init=False, **opts)
    size = opts.get("image_size", 16)
    x, y = images(size=size), jnp.array([0, 1, 2])

    def loss(model):
        logits = model(x, train=True, rng=jax.random.key(0))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    value, grads = nnx.value_and_grad(loss)(m)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    assert all(g.dtype == jnp.float32 for g in leaves)  # params stay float32 under bf16 compute


def test_bf16_compute_close_to_f32():
    f32 = tiny(head_zero_init=False)
    bf16 = tiny(head_zero_init=False, dtype="bfloat16")
    a, b = f32(images()), bf16(images())
    assert b.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(a - b))) < 0.1 and not np.array_equal(a, b)


def test_dtype_auto_is_bf16_on_accelerators_and_f32_on_cpu():
    assert compute_dtype("auto", "cpu") == jnp.float32
    assert compute_dtype("auto", "gpu") == jnp.bfloat16 == compute_dtype("auto", "tpu")
    assert compute_dtype("float32", "gpu") == jnp.float32
    assert compute_dtype("bfloat16", "cpu") == jnp.bfloat16
    model = tiny(head_zero_init=False)  # the default is "auto": this test runs on CPU
    assert jax.default_backend() == "cpu" and model.dtype == jnp.float32
    np.testing.assert_array_equal(model(images()), tiny(head_zero_init=False,
                                                         dtype="float32")(images()))
    with pytest.raises(ValueError, match=r"dtype.*'float16'.*float32.*bfloat16.*auto"):
        tiny(dtype="float16")


def test_dropout_only_in_training():
    m = tiny(dropout=0.2, drop_path=0.3, head_zero_init=False)
    x = images()
    np.testing.assert_array_equal(m(x), m(x, train=False))
    a = m(x, train=True, rng=jax.random.key(1))
    b = m(x, train=True, rng=jax.random.key(1))
    c = m(x, train=True, rng=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, m(x))
    assert not np.allclose(m(x, train=True), m(x, train=True))  # own stream advances


@pytest.mark.parametrize("kw,match", [
    (dict(pool="cls", class_token=False), "class_token=True"),
    (dict(num_heads=5), "not divisible by num_heads 5"),
    (dict(pool="avg"), r"unknown pool 'avg'; valid: \('cls', 'gap', 'map', 'none'\)"),
    (dict(posemb="rope"), "unknown posemb 'rope'; valid"),
    (dict(image_size=18), "18x18 is not divisible by patch size 4x4"),
    (dict(remat_policy="some"), "unknown remat_policy"),
    (dict(attention="flash2"), "unknown attention implementation"),
    (dict(dtype="float16"), "unknown dtype"),
    (dict(widht=3), "valid options: .*width"),
])
def test_bad_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_bad_input_errors():
    m = tiny()
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, height, width, 3\)"):
        m(jnp.zeros((2, 16, 16, 1)))
    with pytest.raises(ValueError, match="not divisible by patch size"):
        m(jnp.zeros((2, 18, 16, 3)))
    with pytest.raises(ValueError, match="unknown ViT size 'X'"):
        create_model("X/16")
    with pytest.raises(ValueError, match="bad patch size"):
        create_model("B/0")
    with pytest.raises(ValueError, match="has no patch size"):
        create_model("B")


def test_jit_compatible():
    m = tiny()

    @nnx.jit
    def forward(model, x):
        return model(x)

    np.testing.assert_allclose(forward(m, images()), m(images()), atol=1e-6)


@pytest.mark.parametrize("opts", [{}, dict(qk_norm=True, layerscale=0.1, pool="map")])
def test_folded_layernorm_affine_is_the_same_function(opts, monkeypatch):
    """Pre-LN blocks hand their LayerNorm scale and shift to the next matmul's weights
    (``LayerNorm.feeding``): outputs and every gradient equal the unfolded model's."""
    from vit_jax.models import layers

    m = tiny(head_zero_init=False, **opts)
    for path, p in nnx.iter_graph(m):  # random norm scales and shifts, so folding matters
        if isinstance(p, nnx.Param) and path[-1] in ("scale", "bias"):
            p[...] = jax.random.normal(jax.random.key(len(path)), p.shape)
    x, y = images(), jnp.array([0, 1, 2])

    def loss(model):
        logits = model(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    calls = []
    feeding = layers.LayerNorm.feeding
    monkeypatch.setattr(layers.LayerNorm, "feeding",
                        lambda self, *a: calls.append(1) or feeding(self, *a))
    folded = nnx.value_and_grad(loss)(m)
    assert len(calls) == 2 * TINY["depth"]  # both norms of every block were folded
    # The reference: the affine applied to the activations, LN(x) @ W + b as written.
    monkeypatch.setattr(layers.LayerNorm, "feeding", lambda self, x, w, b: (self(x), w, b))
    plain = nnx.value_and_grad(loss)(m)
    np.testing.assert_allclose(folded[0], plain[0], rtol=1e-5)
    flat_folded, flat_plain = (dict(nnx.to_flat_state(g)) for g in (folded[1], plain[1]))
    assert flat_folded.keys() == flat_plain.keys()
    # Relative to the largest gradient: the attention key bias's true gradient is 0 (softmax
    # ignores a shift shared by all keys), so both hold rounding noise there.
    largest = max(float(jnp.abs(g[...]).max()) for g in flat_plain.values())
    for name, g in flat_plain.items():
        np.testing.assert_allclose(flat_folded[name][...], g[...], atol=1e-5 * largest,
                                   rtol=1e-4, err_msg=str(name))
    assert any(float(jnp.abs(g[...]).max()) > 1e-3 for name, g in flat_plain.items()
               if name[-1] == "scale")  # the norm scales do get gradients


def test_input_norm_is_for_self_attention_only():
    from vit_jax.models.attention import Attention
    from vit_jax.models.layers import LayerNorm

    attn = Attention(16, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 3, 16))
    with pytest.raises(ValueError, match="input_norm is for self-attention"):
        attn(x, x, input_norm=LayerNorm(16, rngs=nnx.Rngs(0)))
