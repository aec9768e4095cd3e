"""Attention maps, rollout and position similarity against hand computations."""

import numpy as np
import pytest

from tests.helpers import tiny_config
from vit_jax.analysis import (
    attention_entropy,
    attention_rollout,
    class_token_attention,
    input_saliency,
    patch_position_table,
    position_locality,
    position_signal,
    position_similarity,
    similarity_by_distance,
    upsample_map,
)
from vit_jax.config import build_model


def random_attention(depth=3, batch=2, heads=4, tokens=5, seed=0):
    logits = np.random.default_rng(seed).normal(size=(depth, batch, heads, tokens, tokens))
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def test_class_token_attention_is_the_last_layers_class_row_on_the_grid():
    attn = random_attention(tokens=1 + 6)  # class token + a 2x3 grid
    maps = class_token_attention(attn, num_prefix=1, grid=(2, 3))
    assert maps.shape == (2, 4, 2, 3)
    np.testing.assert_allclose(maps[1, 2].ravel(), attn[-1, 1, 2, 0, 1:])
    np.testing.assert_allclose(class_token_attention(attn, 1, (2, 3), layer=0)[0, 0].ravel(),
                               attn[0, 0, 0, 0, 1:])


def test_rollout_matches_an_explicit_product():
    attn = random_attention(depth=3, tokens=1 + 4)
    got = attention_rollout(attn, num_prefix=1, grid=(2, 2))
    for b in range(2):
        r = np.eye(5)
        for layer in range(3):
            a = 0.5 * np.eye(5) + 0.5 * attn[layer, b].mean(0)
            a = a / a.sum(-1, keepdims=True)
            r = a @ r
        np.testing.assert_allclose(got[b].ravel(), r[0, 1:], rtol=1e-12)


def test_rollout_limits():
    # Identity attention keeps every token to itself: nothing flows from patches to the class token.
    eye = np.broadcast_to(np.eye(5), (2, 1, 3, 5, 5))
    np.testing.assert_allclose(attention_rollout(eye, 1, (2, 2)), 0.0)
    # Without the residual term, uniform attention spreads the class token evenly.
    uniform = np.full((2, 1, 3, 5, 5), 0.2)
    np.testing.assert_allclose(attention_rollout(uniform, 1, (2, 2), residual=0.0), 0.2)
    # query="mean" works without a class token.
    no_cls = np.full((1, 1, 1, 4, 4), 0.25)
    assert attention_rollout(no_cls, 0, (2, 2), query="mean").shape == (1, 2, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(head_fusion="median"), "head_fusion"),
    (dict(query="cls"), "query"),
    (dict(residual=1.5), "residual"),
    (dict(grid=(3, 3)), "does not match 1 prefix tokens"),
])
def test_rollout_errors(kwargs, match):
    args = dict(num_prefix=1, grid=(2, 2)) | kwargs
    with pytest.raises(ValueError, match=match):
        attention_rollout(random_attention(tokens=5), **args)


def test_class_token_attention_needs_a_class_token():
    with pytest.raises(ValueError, match="no class token"):
        class_token_attention(random_attention(tokens=4), num_prefix=0, grid=(2, 2))


def test_position_similarity():
    table = np.random.default_rng(1).normal(size=(3, 4, 8))
    sim = position_similarity(table)
    assert sim.shape == (3, 4, 3, 4)
    flat = sim.reshape(12, 12)
    np.testing.assert_allclose(np.diag(flat), 1.0)
    np.testing.assert_allclose(flat, flat.T)
    a, b = table[1, 2], table[2, 0]
    np.testing.assert_allclose(sim[1, 2, 2, 0], a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    with pytest.raises(ValueError, match="grid_h, grid_w, width"):
        position_similarity(table.reshape(12, 8))


def test_model_attention_and_tables_plug_in():
    config = tiny_config()  # 8x8 images, patch 4: class token + 2x2 grid
    model = build_model(config, 10)
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
    _, extras = model(images, return_attention=True)
    maps = class_token_attention(extras["attention"], model.num_prefix, model.grid)
    rollout = attention_rollout(extras["attention"], model.num_prefix, model.grid)
    assert maps.shape == (2, config.model.num_heads, 2, 2)
    assert rollout.shape == (2, 2, 2) and np.all(rollout > 0)
    table = patch_position_table(model)
    assert table.shape == (2, 2, config.model.width)
    np.testing.assert_array_equal(table.reshape(4, -1),
                                  np.asarray(model.posemb.pos_embedding[...])[0, 1:])
    assert upsample_map(maps[0, 0], (8, 8)).shape == (8, 8)
    assert upsample_map(maps[0, 0], (8, 8))[3, 5] == maps[0, 0, 0, 1]


def test_attention_entropy_is_one_for_uniform_and_zero_for_one_hot_rows():
    tokens = 7
    uniform = np.full((2, 3, 4, tokens, tokens), 1 / tokens)
    one_hot = np.broadcast_to(np.eye(tokens), (2, 3, 4, tokens, tokens))
    np.testing.assert_allclose(attention_entropy(uniform), [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(attention_entropy(one_hot), [0.0, 0.0], atol=1e-12)
    half = np.concatenate([uniform[:1], one_hot[:1]])  # per layer, in order
    np.testing.assert_allclose(attention_entropy(half), [1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="expected"):
        attention_entropy(uniform[0])


def test_position_signal_compares_posemb_to_patch_content():
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    signal = {kind: position_signal(build_model(tiny_config(**{"model.posemb": kind}), 10),
                                    images) for kind in ("learn", "sincos2d", "none")}
    assert signal["none"] == 0.0
    # learned tables start at std 0.02; sin-cos values are O(1): ~30x louder at init
    assert 0 < signal["learn"] < 0.1 < signal["sincos2d"]


def test_position_locality_of_a_2d_ordered_table_and_of_noise():
    gh = gw = 5
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    # Gaussian bumps around each position: similarity falls with distance
    centres = np.stack([rows.ravel(), cols.ravel()], -1)
    grid = np.stack([rows, cols], -1)[..., None, :]
    table = np.exp(-((grid - centres) ** 2).sum(-1) / 2.0)  # (gh, gw, 25)
    ordered = position_locality(position_similarity(table))
    noise = position_locality(position_similarity(
        np.random.default_rng(0).normal(size=(gh, gw, 256))))
    assert ordered > 0.9 and abs(noise) < 0.1
    distances, means = similarity_by_distance(position_similarity(table))
    assert distances[0] == 1.0 and np.all(np.diff(distances) > 0)
    assert np.all(np.diff(means) < 0)  # strictly less similar the farther apart


def test_similarity_by_distance_is_the_mean_over_pairs_at_each_distance():
    sim = position_similarity(np.random.default_rng(1).normal(size=(2, 2, 8)))
    distances, means = similarity_by_distance(sim)
    np.testing.assert_allclose(distances, [1.0, np.sqrt(2.0)])
    # a 2x2 grid: pairs at distance 1 are the row and column neighbours, sqrt(2) the diagonals
    near = [sim[0, 0, 0, 1], sim[0, 0, 1, 0], sim[1, 1, 0, 1], sim[1, 1, 1, 0]]
    np.testing.assert_allclose(means, [np.mean(near), np.mean([sim[0, 0, 1, 1],
                                                               sim[0, 1, 1, 0]])])
    with pytest.raises(ValueError, match="too few positions"):
        position_locality(position_similarity(np.ones((1, 2, 4))))


def test_input_saliency_of_a_linear_model_is_its_weights():
    w = np.random.default_rng(2).normal(size=(4 * 4 * 2, 3)).astype(np.float32)

    def model(x):
        return x.reshape(x.shape[0], -1) @ w

    images = np.random.default_rng(3).normal(size=(2, 4, 4, 2)).astype(np.float32)
    got = input_saliency(model, images, np.array([0, 2]))
    for b, label in enumerate([0, 2]):
        expected = np.abs(w[:, label].reshape(4, 4, 2)).max(-1)
        np.testing.assert_allclose(got[b], expected / expected.sum(), rtol=1e-5)
