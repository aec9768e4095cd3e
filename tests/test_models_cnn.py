import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vit_jax import count_params, create_model


@pytest.mark.parametrize("name,params", [("SimpleCNN", 141_352), ("SmallResNet", 175_066)])
def test_cnn_baselines(name, params):
    m = create_model(name, num_classes=10)
    assert count_params(m) == params  # seed 004: 141,354 and 175,258
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    assert m(x, train=False).shape == (4, 10)
    y = jnp.arange(4)

    def loss(model):
        logits = model(x, train=True, rng=jax.random.key(1))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    value, grads = nnx.value_and_grad(loss)(m)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_cnn_grey_input():
    m = create_model("SmallResNet", num_classes=3, in_channels=1)
    assert m(jnp.zeros((2, 8, 8, 1))).shape == (2, 3)
