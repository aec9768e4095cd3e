"""Model zoo: ``create_model("B/16", num_classes=1000)`` and friends."""

from __future__ import annotations

import inspect
import math

import jax
from flax import nnx

from vit_jax.models.cnn import SimpleCNN, SmallResNet
from vit_jax.models.variants import SIZES, parse_variant
from vit_jax.models.vit import VisionTransformer

CNNS = {"SimpleCNN": SimpleCNN, "SmallResNet": SmallResNet}


def create_model(variant: str = "B/16", *, num_classes: int | None = 1000,
                 image_size=224, **overrides) -> nnx.Module:
    """Builds a model from a variant string; keyword overrides win over the variant table.

    ``variant`` is a ViT size with patch (``"S/16"``, ``"Ti/1"``, ``"B/16x8"``), or a CNN baseline
    name (``"SimpleCNN"``, ``"SmallResNet"``). ``overrides`` are ``VisionTransformer`` arguments
    (e.g. ``pool="gap"``, ``posemb="sincos2d"``, ``depth=2`` for a tiny test model).
    """
    valid = [name for name, p in inspect.signature(model_class(variant).__init__).parameters
             .items() if p.kind == p.KEYWORD_ONLY and name not in ("num_classes", "rngs")]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown options {unknown} for {variant!r}; valid options: "
                         f"{', '.join(sorted(valid))}")
    if variant in CNNS:  # they take any image size: image_size is the ViT's
        return CNNS[variant](num_classes=num_classes, **overrides)
    kwargs = {**parse_variant(variant), **overrides}
    if "patch_size" not in kwargs:
        raise ValueError(f"variant {variant!r} has no patch size; write e.g. '{variant}/16' "
                         "or pass patch_size=")
    return VisionTransformer(num_classes=num_classes, image_size=image_size, **kwargs)


def model_class(variant: str) -> type[nnx.Module]:
    """The class that ``create_model(variant)`` instantiates."""
    return CNNS.get(variant, VisionTransformer)


def model_options(variant: str) -> dict:
    """The keyword options of the model class behind ``variant`` with their defaults."""
    cls = model_class(variant)
    skip = ("self", "rngs", "num_classes", "seed")
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in skip and p.kind == p.KEYWORD_ONLY and p.default is not p.empty}


def abstract_model(variant: str = "B/16", **kwargs) -> nnx.Module:
    """The model with shapes only (no parameter memory), for counting and planning."""
    return nnx.eval_shape(lambda: create_model(variant, **kwargs))


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (works on abstract models too)."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return sum(math.prod(x.shape) for x in leaves)


__all__ = ["CNNS", "SIZES", "VisionTransformer", "SimpleCNN", "SmallResNet", "abstract_model",
           "count_params", "create_model", "model_class", "model_options", "parse_variant"]
