"""What a trained ViT does inside, per sweep point: how uniform its attention is and how loud
its position embeddings are next to the patch content (``measure.internals=True``).

Both on the first 64 eval images, for the model at initialisation and after training: a model
whose attention stays uniform (entropy ~ 1 in every layer) averages its tokens and cannot tell
where anything is, which is how a run sits at chance.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections as mlc

from vit_jax import analysis, data
from vit_jax.config import build_model
from vit_jax.loading import load_model

IMAGES = 64


def internals(config: mlc.ConfigDict, workdir: Path, num_classes: int) -> dict:
    """``attn_entropy_first/last`` (per-layer mean row entropy / ln tokens) and
    ``position_signal`` (posemb RMS / patch-embedding RMS), ``_init`` = before training."""
    images = data.first_eval_batch(config.data, IMAGES)["image"]
    out = {}
    trained = load_model(workdir, verbose=False)
    if not hasattr(trained, "posemb"):  # a CNN: no attention, no position embeddings
        return out
    for suffix, model in (("_init", build_model(config, num_classes)), ("", trained)):
        _, extras = model(images, return_attention=True)
        entropy = analysis.attention_entropy(extras["attention"])
        out[f"attn_entropy_first{suffix}"] = float(entropy[0])
        out[f"attn_entropy_last{suffix}"] = float(entropy[-1])
        out[f"position_signal{suffix}"] = analysis.position_signal(model, images)
    return out
