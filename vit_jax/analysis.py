"""What the analysis notebooks compute, as tested functions: attention maps, attention rollout
and position-embedding similarity: the figures of the notebooks.

Attention weights come from ``model(images, return_attention=True)``: an array of shape
``(depth, batch, heads, tokens, tokens)`` whose first ``model.num_prefix`` tokens are the class
token and registers, the rest the patch grid in row-major order.
"""

from __future__ import annotations

import numpy as np


def _patch_rows(rows: np.ndarray, num_prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """(..., tokens) attention rows -> (..., grid_h, grid_w) over the patch tokens only."""
    gh, gw = grid
    if rows.shape[-1] != num_prefix + gh * gw:
        raise ValueError(f"attention over {rows.shape[-1]} tokens does not match {num_prefix} "
                         f"prefix tokens + a {gh}x{gw} patch grid")
    return rows[..., num_prefix:].reshape(*rows.shape[:-1], gh, gw)


def class_token_attention(attention, num_prefix: int, grid: tuple[int, int],
                          layer: int = -1) -> np.ndarray:
    """How much the class token attends to each patch in ``layer``, per head:
    ``(batch, heads, grid_h, grid_w)``. Needs a class token (``num_prefix >= 1``)."""
    if num_prefix < 1:
        raise ValueError("the model has no class token (class_token=False): there is no class "
                         "token attention to show; use attention_rollout(..., query='mean')")
    attention = np.asarray(attention, np.float64)
    return _patch_rows(attention[layer][:, :, 0, :], num_prefix, grid)


def attention_rollout(attention, num_prefix: int, grid: tuple[int, int], *,
                      residual: float = 0.5, head_fusion: str = "mean",
                      query: str = "class") -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): how much each patch flows into the output.

    Per layer, heads are fused (``mean``/``max``/``min``), the residual path is added as
    ``residual * I + (1 - residual) * A`` and rows are renormalised; the layers' matrices are
    multiplied from the first layer up. Returns the ``query`` token's row (``class``: the class
    token; ``mean``: the average over patch tokens, for models without one) over the patch
    grid: ``(batch, grid_h, grid_w)``.
    """
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}
    if head_fusion not in fuse:
        raise ValueError(f"unknown head_fusion {head_fusion!r}; valid: {tuple(fuse)}")
    if query not in ("class", "mean"):
        raise ValueError(f"unknown query {query!r}; valid: ('class', 'mean')")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    attention = np.asarray(attention, np.float64)  # (depth, batch, heads, L, L)
    fused = fuse[head_fusion](attention, axis=2)  # (depth, batch, L, L)
    eye = np.eye(fused.shape[-1])
    rollout = np.broadcast_to(eye, fused.shape[1:]).copy()
    for layer in fused:
        mixed = residual * eye + (1.0 - residual) * layer
        mixed /= mixed.sum(-1, keepdims=True)
        rollout = mixed @ rollout
    if query == "class":
        if num_prefix < 1:
            raise ValueError("query='class' needs a class token; use query='mean'")
        rows = rollout[:, 0, :]
    else:
        rows = rollout[:, num_prefix:, :].mean(1)
    return _patch_rows(rows, num_prefix, grid)


def position_similarity(table) -> np.ndarray:
    """Cosine similarity of every grid position's embedding to every other one.

    ``table``: ``(grid_h, grid_w, width)`` (patch positions only). Returns
    ``(grid_h, grid_w, grid_h, grid_w)``: ``[i, j]`` is the map of position (i, j) to all others.
    """
    table = np.asarray(table, np.float64)
    if table.ndim != 3:
        raise ValueError(f"expected a (grid_h, grid_w, width) table, got shape {table.shape}")
    gh, gw, width = table.shape
    flat = table.reshape(gh * gw, width)
    unit = flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-12)
    return (unit @ unit.T).reshape(gh, gw, gh, gw)


def patch_position_table(model) -> np.ndarray:
    """The model's position embeddings of the patch grid, ``(grid_h, grid_w, width)``: the
    learned table, or the fixed 2D sin-cos one (``posemb="sincos2d"``)."""
    from vit_jax.models.posemb import sincos2d

    pe = model.posemb
    if pe.kind == "sincos2d":
        return np.asarray(sincos2d(*pe.grid, pe.width)).reshape(*pe.grid, -1)
    if pe.kind != "learn":
        raise ValueError(f"the model has posemb={pe.kind!r}: there is no table to show")
    table = np.asarray(pe.pos_embedding[...])[0, pe.num_prefix:]
    return table.reshape(*pe.grid, -1)


def upsample_map(values: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """A (grid_h, grid_w) map repeated to pixels (each patch's value over its patch), for
    overlaying on the image without inventing detail finer than a patch."""
    gh, gw = values.shape[-2:]
    h, w = image_hw
    if h % gh or w % gw:
        raise ValueError(f"image {h}x{w} is not a whole number of {gh}x{gw} patches")
    return np.repeat(np.repeat(values, h // gh, axis=-2), w // gw, axis=-1)


def normalized_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of each distribution along the last axis divided by ln(its length): 1.0 is
    uniform, 0 all mass on one entry."""
    p = np.clip(np.asarray(p, np.float64), 1e-30, 1.0)
    return -(p * np.log(p)).sum(-1) / np.log(p.shape[-1])


def attention_entropy(attention) -> np.ndarray:
    """Per layer, the mean entropy of the attention rows divided by ln(tokens): 1.0 is uniform
    attention (every token averaged alike, as at initialisation), near 0 attends to one token.
    ``attention``: ``(depth, batch, heads, tokens, tokens)``; returns ``(depth,)``."""
    attention = np.asarray(attention, np.float64)
    if attention.ndim != 5 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"expected (depth, batch, heads, tokens, tokens), got {attention.shape}")
    return normalized_entropy(attention).mean(axis=(1, 2, 3))


def position_signal(model, images) -> float:
    """RMS of the position embeddings over RMS of the patch embeddings of ``images``: how
    loud "where" is next to "what" in the tokens the encoder receives (0 without positions)."""
    pe = model.posemb
    if pe.kind == "none":
        return 0.0
    table = patch_position_table(model)
    content = np.asarray(model.patch_embed(np.asarray(images, np.float32)), np.float64)
    return float(np.sqrt(np.mean(table.astype(np.float64) ** 2)) /
                 max(np.sqrt(np.mean(content ** 2)), 1e-12))


def similarity_by_distance(similarity) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine similarity of position pairs per Euclidean grid distance (self-pairs left
    out): ``(distances, mean_similarity)``, distances ascending. ``similarity``: the
    ``(gh, gw, gh, gw)`` array of ``position_similarity``."""
    distance, sim = _pairs(similarity)
    distances = np.unique(np.round(distance, 9))
    means = np.array([sim[np.isclose(distance, d)].mean() for d in distances])
    return distances, means


def position_locality(similarity) -> float:
    """How strictly "near on the grid" means "similar embedding": the Pearson correlation of
    cosine similarity with minus the grid distance over all pairs of distinct positions. 1 =
    similarity falls linearly with distance (seed 004's "recovered 2D locality"), ~0 = no
    spatial structure (a table at initialisation)."""
    distance, sim = _pairs(similarity)
    if np.ptp(sim) == 0 or np.ptp(distance) == 0:
        return 0.0
    return float(np.corrcoef(sim, -distance)[0, 1])


def _pairs(similarity) -> tuple[np.ndarray, np.ndarray]:
    similarity = np.asarray(similarity, np.float64)
    if similarity.ndim != 4 or similarity.shape[:2] != similarity.shape[2:]:
        raise ValueError(f"expected a (gh, gw, gh, gw) similarity, got {similarity.shape}")
    gh, gw = similarity.shape[:2]
    if gh * gw < 3:
        raise ValueError(f"a {gh}x{gw} grid has too few positions to relate to distance")
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()], -1).astype(np.float64)
    distance = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    off = ~np.eye(gh * gw, dtype=bool)
    return distance[off], similarity.reshape(gh * gw, gh * gw)[off]


def input_saliency(model, images, labels) -> np.ndarray:
    """Where a model looks, for any model (ViT or CNN): the gradient of each image's logit of
    ``labels`` with respect to its pixels (Simonyan et al., 2014), absolute, max over channels,
    normalised to sum 1 per image: ``(batch, H, W)``. The one map a CNN and a ViT share."""
    import jax
    import jax.numpy as jnp

    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"{images.shape[0]} images but labels of shape {labels.shape}")

    def label_logits(x):
        return jnp.take_along_axis(model(x), labels[:, None], axis=1).sum()

    grad = np.abs(np.asarray(jax.grad(label_logits)(images), np.float64)).max(-1)
    return grad / np.maximum(grad.sum(axis=(1, 2), keepdims=True), 1e-30)
