"""``load_model(path)``: a ready model from any checkpoint we read, adapted for transfer.

Sources, told apart by the path (relative, ``~``-prefixed or symlinked paths all work):
- a training workdir, or one of its ``checkpoints/<step>`` directories: the architecture comes
  from the config JSON saved with the step, the weights from its ``model`` item (the optimizer
  state is never read, so loading needs no optimizer);
- a converted ``.npz`` written by ``vit_jax.convert`` (our names + ``__vit_jax_config__``), or the
  directory ``convert --output=DIR`` wrote it to (one ``model.npz`` or ``model.safetensors``);
- a Google ``.npz`` or timm ``.safetensors`` file, imported through ``convert.import_checkpoint``
  (a file without those suffixes, e.g. a hub cache blob behind a symlink, is told by content).

Then, for transfer (each change is printed, so a notebook or log shows what happened):
- ``image_size``: learned positions are resampled to the new grid with the model's own
  ``posemb_resample`` method; a ``sincos2d`` table is simply recomputed for the new grid;
- ``patch_size``: the patch kernel is FlexiViT PI-resized (``vit_jax.models.flexi``);
- ``num_classes``: a new head, initialised to zeros (the original ViT fine-tuning recipe: the
  first steps then train the head from a neutral start instead of fighting random logits).

The returned model's ``image_size`` and ``grid`` are the new ones, so ``model(images)`` at the new
size uses the resampled table directly, with no resampling on every call.
``init_from_pretrained`` is the same, writing into a training run's freshly built sharded model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from flax import nnx

from vit_jax import checkpoints, convert, paths
from vit_jax import params as params_lib
from vit_jax.checkpoints import CheckpointNotFoundError
from vit_jax.config import model_kwargs
from vit_jax.logs import log
from vit_jax.models.flexi import change_patch_size
from vit_jax.models.layers import Dense
from vit_jax.models.variants import parse_variant
from vit_jax.models.vit import VisionTransformer
from vit_jax.sizes import as_pair
from vit_jax.tree import flatten

# ``import_checkpoint`` arguments that say how to read a Google/timm file (what its shapes
# cannot tell, and which GELU form it was trained with); every other keyword of ``load_model``
# is a model option.
IMPORT_HINTS = ("variant", "num_heads", "pool", "posemb", "gelu_approximate")
# What ``convert --output=DIR`` writes into DIR; such a directory stands for its one file.
CONVERTED_NAMES = ("model.npz", "model.safetensors")
# Architecture options that decide the parameters; a mismatch is named as a config fix.
ARCH_KEYS = ("width", "depth", "mlp_dim", "num_heads", "in_channels", "class_token",
             "num_registers", "pool", "posemb", "posemb_includes_prefix", "representation_size",
             "qk_norm")


@dataclass
class Source:
    """What a checkpoint holds: ``create_model`` arguments and parameters by flat name."""

    description: str
    config: dict[str, Any]
    params: dict[str, Any]


def load_model(path: str | Path, *, step: int | None = None, image_size=None, patch_size=None,
               num_classes: int | None = None, verbose: bool = True, verify: bool = True,
               weights: str = "raw", **model_overrides) -> nnx.Module:
    """The model stored at ``path``, ready to call, optionally adapted for transfer.

    ``step``: a workdir's checkpoint step (default: the latest). ``image_size``/``patch_size``
    (int or (h, w)) and ``num_classes`` change the model as the module docstring says.
    ``model_overrides`` are ``create_model`` options (e.g. ``scan=True``, ``dropout=0.1``,
    ``posemb_resample='zoom'``); for Google/timm files, ``variant``/``num_heads``/``pool``/
    ``posemb`` help read the file (timm files do not record the head count) and
    ``gelu_approximate`` overrides the GELU form of the file's family (Google: tanh, timm: exact;
    see ``vit_jax.convert``). A checkpoint that does not fit the model raises a ValueError
    listing the offending names and shapes.
    ``verbose``: print what was loaded and every change (``load_with_summary`` returns it).
    ``verify``: check a training checkpoint's files against their integrity record first
    (a damaged step is an error naming the damage and the other steps).
    ``weights="ema"``: a training run's weight average (``optim.ema_decay``) instead of its
    trained parameters.
    """
    model, summary = load_with_summary(path, step=step, image_size=image_size,
                                       patch_size=patch_size, num_classes=num_classes,
                                       verify=verify, weights=weights, **model_overrides)
    if verbose:
        log("\n  ".join(summary))
    return model


def load_with_summary(path: str | Path, *, step: int | None = None, image_size=None,
                      patch_size=None, num_classes: int | None = None, verify: bool = True,
                      weights: str = "raw",
                      **model_overrides) -> tuple[nnx.Module, list[str]]:
    """``load_model`` without printing: (model, [header line, one line per change])."""
    path = resolve(path)
    foreign = _is_foreign(path)
    hints = {k: model_overrides.pop(k) for k in IMPORT_HINTS if foreign and k in model_overrides}
    source = read_checkpoint(path, step=step, verify=verify, weights=weights, **hints)
    model = _build(source, model_overrides)
    model, changes = adapt(model, image_size=image_size, patch_size=patch_size,
                           num_classes=num_classes)
    return model, [f"Loaded {source.description}: {_brief(model)}", *(changes or ["no changes"])]


# ----------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path, *, step: int | None = None, verify: bool = True,
                    weights: str = "raw", **hints) -> Source:
    """The architecture and parameters at ``path`` (any source the module docstring lists)."""
    path = resolve(path)
    kind = convert.file_kind(path)
    if kind is not None:
        if step is not None:
            raise ValueError(f"step={step} applies to training workdirs, not to {path.name}")
        if weights != "raw":
            raise ValueError(f"weights={weights!r} applies to training workdirs (a run's "
                             f"weight average), not to {path.name}")
        if not path.is_file():
            raise CheckpointNotFoundError(f"no checkpoint file {path}")
        if not _is_foreign(path):
            config, params = params_lib.read_npz(path)
            return Source(f"{path} (vit_jax)", config, params)
        config, params = convert.import_checkpoint(path, **hints)
        family = "timm" if kind == ".safetensors" else "google"
        return Source(f"{path} ({family})", config, params)
    if hints:
        raise ValueError(f"{sorted(hints)} help read Google/timm files; {path} is a workdir")
    return _read_workdir(path, step, verify, weights)


def resolve(path: str | Path) -> Path:
    """``path`` made absolute (``paths.absolute``); a directory that ``convert --output=DIR``
    wrote (one ``model.npz`` or ``model.safetensors``, no training checkpoints) -> that file."""
    path = paths.absolute(path)
    if not path.is_dir() or checkpoints.is_run_checkpoint(path):
        return path
    found = [path / name for name in CONVERTED_NAMES if (path / name).is_file()]
    if len(found) > 1:
        raise ValueError(f"{path} holds both {found[0].name} and {found[1].name}: pass the one "
                         f"to load, e.g. {found[0]}")
    return found[0] if found else path


def _is_foreign(path: Path) -> bool:
    """A Google .npz or timm .safetensors (not one of our converted files)."""
    kind = convert.file_kind(path)
    if kind == ".safetensors":
        return True
    return kind == ".npz" and path.is_file() and not params_lib.is_ours(path)


def load_config(path: str | Path, step: int | None = None) -> mlc.ConfigDict:
    """The config a workdir's checkpoint was saved with (e.g. its data and pp strings)."""
    return mlc.ConfigDict(checkpoints.read_config(path, step))


def _read_workdir(path: Path, step: int | None, verify: bool, weights: str) -> Source:
    state, saved, description = checkpoints.read_model(path, step, verify=verify,
                                                       weights=weights)
    if "model" not in saved:
        raise ValueError(f"{description} has no model config (saved by an old version?); "
                         "rebuild the model yourself and use Checkpointer.restore")
    head = state.get("head")
    num_classes = head["kernel"].shape[-1] if head else None
    config = model_kwargs(mlc.ConfigDict({"model": saved["model"]}), num_classes)
    params = flatten(state)
    return Source(description, config, params)


# ----------------------------------------------------------------------------- building


def _build(source: Source, overrides: Mapping[str, Any]) -> nnx.Module:
    model = params_lib.build_architecture({**source.config, **overrides})
    # A training checkpoint also holds the model's RNG streams; only parameters transfer.
    skip = set(flatten(nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))))
    params = {k: v for k, v in source.params.items() if k not in skip}
    try:
        params_lib.load_params_into(model, params)
    except ValueError as e:
        given = f" with overrides {dict(overrides)}" if overrides else ""
        raise ValueError(f"{source.description} does not fit the model{given}: {e}") from None
    _replace_params(model, jnp.asarray)  # numpy -> device arrays
    return model


def adapt(model: nnx.Module, *, image_size=None, patch_size=None,
          num_classes: int | None = None) -> tuple[nnx.Module, list[str]]:
    """(the model at the new image size / patch size / class count, one line per change)."""
    changes: list[str] = []
    is_vit = isinstance(model, VisionTransformer)
    if not is_vit and (image_size is not None or patch_size is not None):
        raise ValueError(f"image_size/patch_size apply to ViTs; a {type(model).__name__} runs "
                         "at any image size as it is")
    if is_vit:
        new_image = as_pair(image_size, "image_size") if image_size is not None \
            else model.image_size
        new_patch = as_pair(patch_size, "patch_size") if patch_size is not None \
            else model.patch_size
        if (new_image, new_patch) != (model.image_size, model.patch_size):
            model, changes = _resize(model, new_image, new_patch)
    if num_classes is not None and num_classes != _num_classes(model):
        changes.append(_new_head(model, num_classes))
    return model, changes


def _resize(model: VisionTransformer, image: tuple[int, int],
            patch: tuple[int, int]) -> tuple[VisionTransformer, list[str]]:
    old = model
    kernel = old.patch_embed.kernel.shape
    table = old.posemb.pos_embedding.shape if old.posemb.kind == "learn" else None
    if old.posemb.kind == "factorized":
        table = old.posemb.max_grid
    model = change_patch_size(old, patch, image_size=image)
    changes = [f"image_size: {_hw(old.image_size)} -> {_hw(image)} "
               f"(grid {_hw(old.grid)} -> {_hw(model.grid)})"]
    if patch != old.patch_size:
        changes.append(f"patch: {_hw(old.patch_size)} -> {_hw(patch)} via FlexiViT PI-resize "
                       f"(kernel {_shape(kernel)} -> {_shape(model.patch_embed.kernel.shape)})")
    if model.grid != old.grid and old.posemb.kind == "factorized":
        changes.append(f"posemb: factorized tables {_hw(table)} -> {_hw(model.posemb.max_grid)}"
                       " via linear resampling")
    elif model.grid != old.grid and table is not None:
        changes.append(f"posemb: {_shape(table)} -> {_shape(model.posemb.pos_embedding.shape)}"
                       f" via {model.posemb.resample_method}")
    elif model.grid != old.grid and model.posemb.kind == "sincos2d":
        changes.append(f"posemb: sincos2d recomputed for the {_hw(model.grid)} grid")
    return model, changes


def _num_classes(model: nnx.Module) -> int | None:
    head = getattr(model, "head", None)
    return head.kernel.shape[-1] if head is not None else None


def _new_head(model: nnx.Module, num_classes: int) -> str:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    old = _num_classes(model)
    if old is None:  # a headless ViT: the head reads the pre-logits (or the width)
        din = (model.pre_logits.kernel.shape[1] if model.pre_logits is not None
               else model.patch_embed.kernel.shape[-1])
        axes = ("embed", "classes")
    else:
        din, axes = model.head.kernel.shape[0], model.head.kernel.get_metadata()["logical_axes"]
    model.head = Dense(din, num_classes, rngs=nnx.Rngs(0), axes=axes,
                       kernel_init=nnx.initializers.zeros_init())
    return f"head: {old or 'no'} -> {num_classes} classes, re-initialised to zeros"


def _replace_params(model: nnx.Module, fn: Callable, *trees: Any) -> None:
    """Maps ``fn`` over the model's parameter arrays (and matching ``trees``) in place."""
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(fn, nnx.to_pure_dict(state), *trees))
    nnx.update(model, state)


def _brief(model: nnx.Module) -> str:
    if not isinstance(model, VisionTransformer):
        return f"{type(model).__name__}, {_num_classes(model)} classes"
    width = model.patch_embed.kernel.shape[-1]
    return (f"ViT width {width} depth {model.encoder.depth}, image {_hw(model.image_size)}, "
            f"patch {_hw(model.patch_size)}, grid {_hw(model.grid)}, "
            f"{_num_classes(model) or 'no'} classes")


def _hw(pair: tuple[int, int]) -> str:
    return f"{pair[0]}x{pair[1]}"


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


# ----------------------------------------------------------------------------- training runs


def init_from_pretrained(model: nnx.Module, config: mlc.ConfigDict) -> None:
    """Writes the weights of ``config.init_from`` into a run's freshly built ``model``.

    The checkpoint is adapted to the model (image size, patch size, class count, with the
    config's ``posemb_resample``) and each array lands with the model's existing sharding.
    Architecture differences are an error naming the ``--config.model.*`` values to set.
    """
    is_vit = isinstance(model, VisionTransformer)
    fit = dict(image_size=model.image_size, patch_size=model.patch_size,
               posemb_resample=model.posemb.resample_method) if is_vit else {}
    source, summary = load_with_summary(config.init_from, num_classes=_num_classes(model), **fit)
    shardings = jax.tree.map(lambda x: x.sharding, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    weights = params_lib.flat_params(source)
    if (is_vit and source.pre_logits is not None and model.pre_logits is None
            and any(line.startswith("head:") for line in summary)):
        # The original ViT transfer: the whole head (pre-logits + classifier) is replaced by
        # one zero-initialised layer; the run's model already has that layer.
        own = params_lib.flat_params(model)
        weights = {k: v for k, v in weights.items() if not k.startswith(("pre_logits/", "head/"))}
        weights.update({k: v for k, v in own.items() if k.startswith("head/")})
        summary.append("pre-logits layer dropped with the old head (the model has none: the "
                       "whole head is replaced, as the original ViT fine-tuning does)")
    try:
        params_lib.load_params_into(model, weights)
    except ValueError as e:
        raise ValueError(f"config.init_from={config.init_from} does not fit config.model: {e}"
                         + _arch_hint(source, config)) from None
    # Every process holds the whole array; each device takes its shard (multi-host safe).
    _replace_params(model, lambda x, s: jax.make_array_from_callback(
        x.shape, s, lambda index: np.asarray(x)[index]), shardings)
    log("Initialised from pretrained weights: " + "\n  ".join(summary))


def _arch_hint(source: nnx.Module, config: mlc.ConfigDict) -> str:
    if not isinstance(source, VisionTransformer) or "width" not in config.model:
        return ""
    have = params_lib.architecture(source)
    kw = model_kwargs(config, None)
    want = {**parse_variant(kw["variant"]), **kw}
    fixes = [f"--config.model.{k}={have[k]}" for k in ARCH_KEYS
             if k in want and want[k] != have[k]]
    return (f"\nThe checkpoint's architecture differs; set: {' '.join(fixes)}" if fixes else "")
