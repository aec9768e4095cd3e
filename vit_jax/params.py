"""Parameters by name: our flat names, loop and scan forms, loading with checks, our ``.npz``.

A parameter's name is its path in the model's state (``encoder/blocks/0/attn/query/kernel``);
the loop form names each block, the scan form stacks them on a leading axis
(``encoder/blocks/attn/query/kernel``). Loading, fine-tuning and the interop with other
projects' checkpoints (``vit_jax.convert``) all move parameters through these names, and an
``architecture`` dict (the ``create_model`` arguments that decide the parameters) rebuilds the
model they fit. Our own file format is an ``.npz`` of loop-form float32 arrays plus the
architecture as JSON under ``CONFIG_KEY``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from vit_jax import paths
from vit_jax.models import create_model
from vit_jax.models.variants import SIZES
from vit_jax.tree import flatten

CONFIG_KEY = "__vit_jax_config__"



def _is_scan_name(name: str) -> bool:
    return name.startswith("encoder/blocks/") and not name.split("/")[2].isdigit()


def to_loop_names(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scan-form names (``encoder/blocks/norm1/scale``, leading layer axis) -> one per layer."""
    out = {}
    for name, a in flat.items():
        if _is_scan_name(name):
            rest = name[len("encoder/blocks/"):]
            out.update({f"encoder/blocks/{i}/{rest}": a[i] for i in range(a.shape[0])})
        else:
            out[name] = a
    return out


def to_scan_names(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Loop-form names -> scan form (blocks stacked on a leading axis)."""
    out, per_layer = {}, {}
    for name, a in flat.items():
        m = re.match(r"encoder/blocks/(\d+)/(.*)", name)
        if m:
            per_layer.setdefault(m[2], {})[int(m[1])] = a
        else:
            out[name] = a
    for rest, layers in per_layer.items():
        out[f"encoder/blocks/{rest}"] = np.stack([layers[i] for i in sorted(layers)])
    return out


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters as numpy arrays under loop-form names (scan models unstacked)."""
    flat = flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return to_loop_names({k: np.asarray(v) for k, v in flat.items()})


def load_params_into(model: nnx.Module, params: Mapping) -> nnx.Module:
    """Writes ``params`` (a pure dict, nested or flat by name, loop or scan form) into ``model``.

    Every parameter must be present with the model's shape; otherwise one error lists each
    missing, unexpected and mis-shaped name (expected vs got). Returns the model.
    """
    state, pure = check_fit(model, params)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return model


def check_fit(model: nnx.Module, params: Mapping) -> tuple[nnx.State, dict]:
    """(the model's param state, ``params`` as a pure dict in its structure), or the error.
    Works on abstract models too (``nnx.eval_shape``), to check a file without building it."""
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    expected = flatten(pure)
    given = flatten(params) if any(isinstance(v, Mapping) for v in params.values()) else params
    scan = any(_is_scan_name(n) for n in expected)
    given = to_scan_names(to_loop_names(given)) if scan else to_loop_names(given)
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    bad = [f"{n}: expected {tuple(expected[n].shape)}, got {tuple(np.shape(given[n]))}"
           for n in sorted(set(expected) & set(given))
           if tuple(expected[n].shape) != tuple(np.shape(given[n]))]
    if missing or unexpected or bad:
        raise ValueError("parameters do not fit the model:"
                         + listing("missing", missing) + listing("unexpected", unexpected)
                         + listing("wrong shape", bad))

    def fill(tree: Mapping, prefix: str = "") -> dict:
        return {k: fill(v, f"{prefix}{k}/") if isinstance(v, Mapping)
                else np.asarray(given[f"{prefix}{k}"], v.dtype) for k, v in tree.items()}

    return state, fill(pure)


def listing(title: str, names: list[str]) -> str:
    return f"\n  {title} ({len(names)}): " + ", ".join(names) if names else ""


def architecture(model: nnx.Module) -> dict:
    """The ``create_model`` arguments that rebuild ``model``'s architecture (not its training
    options such as dropout); ``layerscale`` only marks presence, values come with the params."""
    p = flat_params(model)
    width, depth = p["patch_embed/kernel"].shape[-1], model.encoder.depth
    mlp_dim = p["encoder/blocks/0/mlp/fc1/kernel"].shape[1]
    heads = p["encoder/blocks/0/attn/query/kernel"].shape[1]
    return dict(
        variant=variant_name(width, depth, mlp_dim, heads, model.patch_size),
        num_classes=p["head/kernel"].shape[1] if "head/kernel" in p else None,
        image_size=list(model.image_size), patch_size=list(model.patch_size),
        in_channels=model.in_channels, width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads,
        posemb=model.posemb.kind, posemb_includes_prefix=model.posemb.includes_prefix,
        posemb_resample=model.posemb.resample_method, class_token="cls_token" in p,
        num_registers=p["reg_tokens"].shape[1] if "reg_tokens" in p else 0, pool=model.pool,
        layerscale=1e-5 if "encoder/blocks/0/ls1/gamma" in p else None,
        qk_norm="encoder/blocks/0/attn/q_norm/scale" in p,
        representation_size=p["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in p else None,
        gelu_approximate=model.gelu_approximate,
    )


def variant_name(width, depth, mlp_dim, heads, patch) -> str | None:
    for name, size in SIZES.items():
        if tuple(size) == (width, depth, mlp_dim, heads):
            ph, pw = patch
            return f"{name}/{ph}" if ph == pw else f"{name}/{ph}x{pw}"
    return None


def build_architecture(arch: Mapping, **runtime) -> nnx.Module:
    """A model with the architecture ``arch`` describes; ``runtime`` adds options like
    ``scan=True``."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    return create_model(kw.pop("variant") or "mu", **kw, **runtime)


# ----------------------------------------------------------------------------------------------
# Our file format.


def save_npz(path: str | Path, arch: Mapping, params: Mapping[str, np.ndarray]) -> Path:
    """Writes our format: loop-form names -> float32 arrays, plus the architecture as JSON."""
    path = paths.output_file(path)
    arrays = {k: np.asarray(v, np.float32) for k, v in to_loop_names(params).items()}
    with path.open("wb") as f:
        np.savez(f, **arrays, **{CONFIG_KEY: np.array(json.dumps(dict(arch)))})
    return path


def is_ours(path: str | Path) -> bool:
    """An ``.npz`` that ``save_npz`` wrote (not a Google one)."""
    with np.load(path, allow_pickle=False) as z:
        return CONFIG_KEY in z.files


def read_npz(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(architecture, parameters by loop-form name) of a file ``save_npz`` wrote."""
    path = paths.absolute(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if CONFIG_KEY not in arrays:
        raise ValueError(f"{path} is not a vit_jax checkpoint (no {CONFIG_KEY}); convert it with "
                         f"python -m vit_jax.convert --input={path} --output=DIR")
    return json.loads(str(arrays.pop(CONFIG_KEY))), arrays


def load_npz(path: str | Path, **runtime) -> nnx.Module:
    """The model stored by ``save_npz`` (``runtime``: e.g. ``scan=True``)."""
    arch, params = read_npz(path)
    return load_params_into(build_architecture(arch, **runtime), params)
