"""Layer-wise learning-rate decay and per-parameter lr multipliers (fine-tuning recipes):
the factor of every parameter, loop and scanned encoders alike, and the updates they scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_config
from vit_jax import optim
from vit_jax.config import validate
from vit_jax.models import create_model
from vit_jax.tree import path_names


def params(scan=False, depth=3):
    model = create_model("mu/4", num_classes=10, image_size=8, in_channels=1, width=32,
                         depth=depth, num_heads=2, mlp_dim=64, scan=scan)
    return nnx.state(model, nnx.Param)


def named_factors(tree, **kw):
    factors = optim.lr_factors(tree, **kw)
    return {"/".join(path_names(p)): f for p, f in jax.tree_util.tree_leaves_with_path(
        factors, is_leaf=lambda x: isinstance(x, nnx.Variable))}


def test_layer_decay_factor_of_every_parameter():
    f = named_factors(params(depth=3), layer_decay=0.5)  # D = 3: embeddings are layer 0
    assert f["patch_embed/kernel"] == f["cls_token"] == f["posemb/pos_embedding"] == 0.5**4
    assert f["encoder/blocks/0/attn/query/kernel"] == 0.5**3
    assert f["encoder/blocks/2/mlp/fc2/bias"] == 0.5**1
    assert f["encoder/norm/scale"] == f["head/kernel"] == 1.0


def test_a_scanned_encoder_gets_the_same_factors_per_stacked_layer():
    loop = named_factors(params(depth=3), layer_decay=0.7)
    scan = named_factors(params(scan=True, depth=3), layer_decay=0.7)
    stacked = scan["encoder/blocks/attn/key/kernel"]
    assert stacked.shape == (3, 1, 1, 1)  # broadcasts over (3, 32, 2, 16)
    np.testing.assert_allclose(stacked.ravel(), [loop[f"encoder/blocks/{i}/attn/key/kernel"]
                                                 for i in range(3)])
    assert scan["patch_embed/kernel"] == loop["patch_embed/kernel"]


def test_lr_mults_first_full_match_wins_and_multiplies_layer_decay():
    rules = (("head/.*", 10.0), (".*", 0.5))
    f = named_factors(params(depth=2), layer_decay=0.5, lr_mults=rules)
    assert f["head/kernel"] == 10.0 and f["encoder/norm/bias"] == 0.5
    assert f["encoder/blocks/1/norm1/scale"] == 0.5 * 0.5
    only = named_factors(params(depth=2), lr_mults=(("posemb/.*", 0.0),))
    assert only["posemb/pos_embedding"] == 0.0 and only["head/bias"] == 1.0


def test_updates_are_the_plain_updates_times_the_factors():
    tree = {"encoder": {"blocks": {"0": {"w": jnp.ones((2, 2))}, "1": {"w": jnp.ones((2, 2))}}},
            "head": {"w": jnp.ones((2, 2))}, "patch_embed": {"w": jnp.ones((2, 2))}}
    grads = jax.tree.map(lambda x: 2.0 * x, tree)
    cfg = dict(name="sgd", lr=0.1, momentum=0.0, schedule="constant", layer_decay=0.5,
               lr_mults=(("head/.*", 3.0),))
    tx = optim.build_tx(cfg)
    updates, _ = tx.update(grads, tx.init(tree), tree)
    want = {"encoder/blocks/0/w": -0.2 * 0.25, "encoder/blocks/1/w": -0.2 * 0.5,
            "head/w": -0.2 * 3.0, "patch_embed/w": -0.2 * 0.125}
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        np.testing.assert_allclose(u, want["/".join(path_names(path))], rtol=1e-6)
    plain_tx = optim.build_tx(dict(cfg, layer_decay=None, lr_mults=()))
    plain, _ = plain_tx.update(grads, plain_tx.init(tree), tree)
    np.testing.assert_allclose(plain["head"]["w"], -0.2)


def test_a_run_with_layer_decay_trains():
    import tempfile

    from vit_jax.train import train_and_evaluate

    c = tiny_config(**{"optim.layer_decay": 0.75, "total_steps": 30})
    c.optim.lr_mults = (("head/.*", 2.0),)
    results = train_and_evaluate(c, tempfile.mkdtemp())
    assert results["final"]["eval/accuracy"] > 0.3


@pytest.mark.parametrize("changes, message", [
    ({"optim.layer_decay": 1.5}, r"optim.layer_decay.*\(0, 1\]"),
    ({"optim.layer_decay": 0.0}, r"optim.layer_decay.*\(0, 1\]"),
])
def test_bad_layer_decay_fails_before_any_work(changes, message):
    with pytest.raises(ValueError, match=message):
        validate(tiny_config(**changes))


@pytest.mark.parametrize("rules", [(("head/.*",),), (("(", 2.0),), (("head/.*", -1.0),)])
def test_bad_lr_mults_fail_before_any_work(rules):
    c = tiny_config()
    c.optim.lr_mults = rules
    with pytest.raises(ValueError, match=r"optim.lr_mults: .* must be a \(regex, multiplier"):
        validate(c)
