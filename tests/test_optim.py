"""Optimizer construction: decay mask, schedules, clipping, gradient accumulation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from vit_jax import optim


class TinyViTLike(nnx.Module):
    """Has every kind of parameter the mask must tell apart."""

    def __init__(self, rngs: nnx.Rngs):
        self.pos_embedding = nnx.Param(jnp.ones((1, 5, 4)))
        self.cls_token = nnx.Param(jnp.ones((1, 1, 4)))
        self.reg_tokens = nnx.Param(jnp.ones((1, 2, 4)))
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])
        self.head = nnx.Linear(4, 3, rngs=rngs)


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(3, 16, rngs=rngs)
        self.l2 = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l2(jax.nn.gelu(self.l1(x)))


EXPECTED_MASK = {
    "pos_embedding": False,
    "cls_token": False,
    "reg_tokens": False,
    "norm": {"scale": False, "bias": False},
    "blocks": {0: {"kernel": True, "bias": False}, 1: {"kernel": True, "bias": False}},
    "head": {"kernel": True, "bias": False},
}


def test_decay_mask_on_pure_dict_and_state():
    model = TinyViTLike(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    assert optim.decay_mask(nnx.to_pure_dict(state)) == EXPECTED_MASK
    assert nnx.to_pure_dict(optim.decay_mask(state)) == EXPECTED_MASK
    # The MAP-head probe is a (1, 1, D) array: only its name keeps it out.
    fake = {"MAPHead_0": {"probe": np.zeros((1, 1, 8)), "mlp": {"kernel": np.zeros((8, 8))}}}
    assert optim.decay_mask(fake) == {"MAPHead_0": {"probe": False, "mlp": {"kernel": True}}}


def test_weight_decay_skips_masked_params():
    """Zero gradients isolate the decay term: kernels shrink by lr*wd, the rest stays put."""
    model = TinyViTLike(nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    cfg = dict(name="adamw", lr=0.1, weight_decay=0.5, schedule="constant")
    opt = nnx.Optimizer(model, optim.build_tx(cfg), wrt=nnx.Param)
    grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    np.testing.assert_allclose(after["head"]["kernel"], before["head"]["kernel"] * (1 - 0.05))
    for path in (("pos_embedding",), ("cls_token",), ("norm", "scale"), ("head", "bias")):
        a, b = after, before
        for k in path:
            a, b = a[k], b[k]
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "cfg, expected",
    [
        # step: value. Warmup is linear from 0 and peaks at warmup_steps.
        (dict(schedule="cosine", warmup_steps=10, total_steps=110, end_lr_factor=0.1),
         {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.55, 110: 0.1, 200: 0.1}),
        (dict(schedule="linear", warmup_steps=10, total_steps=110),
         {5: 0.5, 10: 1.0, 35: 0.75, 110: 0.0}),
        # rsqrt: sqrt(timescale / (step - warmup + timescale)).
        (dict(schedule="rsqrt", warmup_steps=10, timescale=100),
         {5: 0.5, 10: 1.0, 110: 2 ** -0.5, 310: 0.5}),
        (dict(schedule="rsqrt", warmup_steps=0, timescale=100, total_steps=400, cooldown_steps=100),
         {0: 1.0, 300: 0.5, 350: 0.5 * (100 / 450) ** 0.5, 400: 0.0}),
        (dict(schedule="constant", warmup_steps=4), {0: 0.0, 2: 0.5, 4: 1.0, 10**6: 1.0}),
    ],
)
def test_schedule_values(cfg, expected):
    schedule = optim.build_schedule({"lr": 2.0, **cfg})
    for step, factor in expected.items():
        np.testing.assert_allclose(float(schedule(step)), 2.0 * factor, rtol=1e-6, atol=1e-7)
    # Jit-able with a traced step, as inside the train step.
    np.testing.assert_allclose(jax.jit(schedule)(jnp.int32(10)), schedule(10), rtol=1e-6)


def test_accepts_config_dict():
    cfg = ml_collections.ConfigDict(dict(name="sgd", lr=0.5, schedule="constant", nesterov=True))
    assert float(optim.build_schedule(cfg)(3)) == 0.5
    params = {"w": jnp.ones((2, 2))}
    tx = optim.build_tx(cfg)
    updates, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.5 * (1 + 0.9), rtol=1e-6)  # nesterov 1st step


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"valid choices: \('cosine', 'linear', 'rsqrt'"):
        optim.build_schedule(dict(schedule="cosinus", total_steps=10))
    with pytest.raises(ValueError, match=r"valid choices: \('adamw', 'sgd'\)"):
        optim.build_tx(dict(name="adam", schedule="constant"))
    with pytest.raises(ValueError, match="needs total_steps"):
        optim.build_schedule(dict(schedule="cosine"))
    with pytest.raises(ValueError, match=r"Unknown optimizer config keys \['weight_deacy'\]"):
        optim.build_tx(dict(weight_deacy=0.1, schedule="constant"))


def test_global_norm_clipping():
    tx = optim.build_tx(dict(name="sgd", lr=1.0, momentum=0.0, schedule="constant",
                             grad_clip_norm=1.0))
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
    grads = {"w": jnp.full((3, 4), 2.0), "b": jnp.full(4, 4.0)}  # global norm sqrt(48+64)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)
    # Direction is preserved: updates = -grads / ||grads||.
    np.testing.assert_allclose(updates["b"], -4.0 / np.sqrt(112.0), rtol=1e-6)
    small = jax.tree.map(lambda g: g / 100, grads)  # norm < 1: left untouched
    updates, _ = tx.update(small, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -small["w"], rtol=1e-6)


def _mse(model: MLP, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)  # mean over examples: accumulation-invariant


def test_grad_accumulation_equals_large_batch():
    x = jax.random.normal(jax.random.key(1), (24, 3))
    y = jax.random.normal(jax.random.key(2), (24, 2))
    cfg = dict(name="adamw", lr=1e-2, weight_decay=0.1, schedule="constant", grad_clip_norm=1.0)

    def train_step(num_micro: int):
        @nnx.jit
        def step(model, opt, batch):
            loss, grads = optim.accumulate_gradients(
                nnx.value_and_grad(_mse), model, batch, num_micro
            )
            opt.update(model, grads)
            return loss, grads

        return step

    results = {}
    for k in (1, 4):
        model = MLP(nnx.Rngs(0))
        opt = nnx.Optimizer(model, optim.build_tx(cfg), wrt=nnx.Param)
        loss, grads = train_step(k)(model, opt, (x, y))
        results[k] = (loss, grads, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    np.testing.assert_allclose(results[4][0], results[1][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(results[4][1:]), jax.tree.leaves(results[1][1:]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_grad_accumulation_on_pure_params_with_aux():
    params = {"w": jnp.arange(6.0).reshape(3, 2)}
    x = jnp.arange(12.0).reshape(4, 3)

    def loss_fn(p, xb):
        loss = jnp.mean((xb @ p["w"]) ** 2)
        return loss, {"mean_x": jnp.mean(xb)}

    fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss1, aux1), g1 = fn(params, x)
    (loss2, aux2), g2 = optim.accumulate_gradients(fn, params, x, 2)
    np.testing.assert_allclose(loss2, loss1, rtol=1e-6)
    np.testing.assert_allclose(aux2["mean_x"], aux1["mean_x"], rtol=1e-6)
    np.testing.assert_allclose(g2["w"], g1["w"], rtol=1e-6)


def test_grad_accumulation_rejects_indivisible_batch():
    fn = jax.value_and_grad(lambda p, xb: jnp.mean(xb * p))
    with pytest.raises(ValueError, match="divisible by 4"):
        optim.accumulate_gradients(fn, jnp.float32(1.0), jnp.ones((10, 2)), 4)


class DropoutMLP(MLP):
    def __init__(self, rngs: nnx.Rngs):
        super().__init__(rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l2(self.drop(jax.nn.gelu(self.l1(x))))


def test_grad_accumulation_threads_rng_state():
    """Each micro-batch draws a fresh dropout mask, and the module's RNG advances by k."""
    model = DropoutMLP(nnx.Rngs(0, dropout=1))
    count = lambda: int(nnx.to_pure_dict(nnx.state(model, nnx.RngState))["drop"]["rngs"]["count"])
    before = count()
    x, y = jnp.ones((6, 3)), jnp.zeros((6, 2))
    step = nnx.jit(lambda m, b: optim.accumulate_gradients(nnx.value_and_grad(_mse), m, b, 3))
    loss, _ = step(model, (x, y))
    assert count() == before + 3
    assert np.isfinite(float(loss))


def test_mu_dtype_stores_adams_first_moment_in_bf16():
    params = {"w": jnp.ones((4, 4)), "b": jnp.zeros(4)}
    state = optim.build_tx(dict(total_steps=10, mu_dtype="bfloat16")).init(params)
    adam = next(s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "mu"))
                if hasattr(s, "mu"))
    assert {x.dtype for x in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam.nu)} == {jnp.dtype(jnp.float32)}
    default = optim.build_tx(dict(total_steps=10)).init(params)
    assert {x.dtype for x in jax.tree.leaves(default)} <= {jnp.dtype(jnp.float32),
                                                           jnp.dtype(jnp.int32)}
    with pytest.raises(ValueError, match=r"optim\.mu_dtype='bf16' must be one of \(None, "
                       r"'float32', 'bfloat16'\)"):
        optim.build_tx(dict(total_steps=10, mu_dtype="bf16"))
