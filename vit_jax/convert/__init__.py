"""Import and export ViT checkpoints of the peers: Google .npz and timm .safetensors.

    python -m vit_jax.convert --input=ViT-B_16.npz --output=DIR            # -> DIR/model.npz
    python -m vit_jax.convert --input=vit_b16.safetensors --output=b16.npz --variant=B/16
    python -m vit_jax.convert --input=DIR --output=b16.safetensors --to=timm   # DIR/model.npz
    python -m vit_jax.convert --input=runs/quickstart [--step=N] --output=DIR   # a training run

``--input`` is a file, the directory an earlier ``--output=DIR`` wrote, or a training workdir
(or one of its ``checkpoints/<step>`` directories, read by ``vit_jax.loading``; the latest step
unless ``--step``). Paths may be relative, ``~``-prefixed or symlinks (a file whose resolved
name lacks ``.npz``/``.safetensors``, e.g. a hub cache blob, is told by its content). Files are
written with the permissions a plain ``open()`` gives (the umask), whichever the format.

Formats (``FORMATS``):
- ``google``: the original ViT (google-research/vision_transformer) and big_vision, told apart
  by their block names; big_vision's stacked ``Transformer/encoderblock`` (scan) is unstacked and
  a ``params/`` prefix is stripped (a training checkpoint's other state, e.g. ``opt/``, is not
  read). Export writes original-ViT names.
- ``timm``: a timm ``vit_*`` state dict saved with safetensors (numpy only, no torch).
- ``vit_jax``: ours, what ``convert`` writes (``vit_jax.params.save_npz``): our parameter names
  in loop form plus the architecture as JSON.

Each format's parameter-name mapping is one table (``GOOGLE``, ``TIMM``) read by both import and
export. Anything the table cannot place is an error naming the keys, never skipped.

Parity note: Google's Flax models (vision_transformer ``models_vit.py``, big_vision ``vit.py``)
call ``flax.linen.gelu`` = ``jax.nn.gelu`` with its default ``approximate=True`` (tanh form); timm
uses exact erf GELU. Imported Google checkpoints get ``gelu_approximate=True`` so they compute what
the original JAX model computes; timm files keep the exact form (the gap is ~1e-4..1e-3 in
logits). ``--gelu=tanh|exact`` (``gelu_approximate=`` in ``import_checkpoint``/``load_model``)
overrides the family's form for a file that was trained with the other one.

Round trips (export, then import the file again): the parameter values always come back
bit-exact (a Google export may re-lay the position table exactly: a zero [cls] row added, or the
[cls] row folded into the token); the logits come back bit-exact, at the exported image size,
when
- the file is ours (``vit_jax`` .npz) or a timm file we exported: both carry our config, GELU
  form included;
- the file is a Google .npz and the model used the tanh GELU (Google's form), or the import is
  told the model's form with ``--gelu=exact`` / ``gelu_approximate=False``. A Google file has no
  room for our config (extra keys would break Google's loaders), so without that an exact-GELU
  model comes back computing the tanh GELU (logits off by ~1e-4). Google imports also take
  Google's ``posemb_resample='zoom'``, which matters only at another image size.
Files that timm or Google wrote themselves have no such caveat: they import in their own form.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import nnx

from vit_jax import params as params_lib
from vit_jax import paths
from vit_jax.models.patch_embed import grid_size
from vit_jax.models.resample import check_method, resample_posemb
from vit_jax.models.variants import SIZES, parse_variant
from vit_jax.sizes import as_pair
from vit_jax.tree import flatten

FORMATS = ("vit_jax", "google", "timm")
EXTENSIONS = {"vit_jax": ".npz", "google": ".npz", "timm": ".safetensors"}
GELU_FORMS = {"tanh": True, "exact": False}  # --gelu -> the model's ``gelu_approximate``
# How each peer resizes position embeddings when it loads at a new resolution; a converted
# model keeps its family's method for dynamic resolution too (config ``posemb_resample``).
FAMILY_RESAMPLE = {"google": "zoom", "timm": "bicubic_antialias"}

# ----------------------------------------------------------------------------------------------
# Array layouts: how one rule turns our arrays into theirs and back.


def _heads_in_to_theirs(ours: list[np.ndarray]) -> np.ndarray:  # n x (D, H, hd) -> (n*H*hd, D)
    return np.concatenate([k.reshape(k.shape[0], -1).T for k in ours])


def _heads_in_to_ours(w: np.ndarray, n: int, heads: int) -> list[np.ndarray]:
    return [p.T.reshape(p.shape[1], heads, -1) for p in np.split(w, n)]


@dataclass(frozen=True)
class Layout:
    to_theirs: Callable  # list of our arrays -> their array
    to_ours: Callable  # (their array, n ours, heads) -> list of our arrays
    needs_heads: bool = False


LAYOUTS = {
    "same": Layout(lambda a: a[0], lambda w, n, h: [w]),
    "linear": Layout(lambda a: a[0].T, lambda w, n, h: [w.T]),  # (in, out) <-> torch (out, in)
    "conv": Layout(lambda a: a[0].transpose(3, 2, 0, 1),  # (ph, pw, C, D) <-> (D, C, ph, pw)
                   lambda w, n, h: [w.transpose(2, 3, 1, 0)]),
    "heads_in": Layout(_heads_in_to_theirs, _heads_in_to_ours, needs_heads=True),
    "heads_bias": Layout(lambda a: np.concatenate([b.reshape(-1) for b in a]),
                         lambda w, n, h: [b.reshape(h, -1) for b in np.split(w, n)], True),
    "heads_out": Layout(lambda a: a[0].reshape(-1, a[0].shape[-1]).T,  # (H, hd, D) -> (D, H*hd)
                        lambda w, n, h: [w.T.reshape(h, -1, w.shape[0])], True),
}


@dataclass(frozen=True)
class Rule:
    ours: tuple[str, ...]  # our names ("{i}" = block index); several when theirs is fused
    theirs: str  # their name (for google: original ViT)
    layout: str = "same"
    big_vision: str | None = None  # google only: big_vision's name when it differs


# ----------------------------------------------------------------------------------------------
# The two name tables.


def _google_block() -> list[Rule]:
    enc, blk = "encoder/blocks/{i}/", "Transformer/encoderblock_{i}/"
    rules = []
    for ours, vit, bv, leaves in [
        ("norm1", "LayerNorm_0", "LayerNorm_0", ("scale", "bias")),
        ("attn/query", "MultiHeadDotProductAttention_1/query", None, ("kernel", "bias")),
        ("attn/key", "MultiHeadDotProductAttention_1/key", None, ("kernel", "bias")),
        ("attn/value", "MultiHeadDotProductAttention_1/value", None, ("kernel", "bias")),
        ("attn/out", "MultiHeadDotProductAttention_1/out", None, ("kernel", "bias")),
        ("norm2", "LayerNorm_2", "LayerNorm_1", ("scale", "bias")),
        ("mlp/fc1", "MlpBlock_3/Dense_0", "MlpBlock_0/Dense_0", ("kernel", "bias")),
        ("mlp/fc2", "MlpBlock_3/Dense_1", "MlpBlock_0/Dense_1", ("kernel", "bias")),
    ]:
        bv = bv or vit.replace("_1/", "_0/")
        rules += [Rule((f"{enc}{ours}/{leaf}",), f"{blk}{vit}/{leaf}",
                       big_vision=f"{blk}{bv}/{leaf}") for leaf in leaves]
    return rules


def _google_map_head() -> list[Rule]:
    pairs = [("probe", "probe")]
    for ours, theirs in [("attn/query", "MultiHeadDotProductAttention_0/query"),
                         ("attn/key", "MultiHeadDotProductAttention_0/key"),
                         ("attn/value", "MultiHeadDotProductAttention_0/value"),
                         ("attn/out", "MultiHeadDotProductAttention_0/out"),
                         ("mlp/fc1", "MlpBlock_0/Dense_0"), ("mlp/fc2", "MlpBlock_0/Dense_1")]:
        pairs += [(f"{ours}/kernel", f"{theirs}/kernel"), (f"{ours}/bias", f"{theirs}/bias")]
    pairs += [("norm/scale", "LayerNorm_0/scale"), ("norm/bias", "LayerNorm_0/bias")]
    return [Rule((f"map_head/{o}",), f"MAPHead_0/{t}") for o, t in pairs]


# Flax layouts equal ours (Dense (in, out), attention (D, H, hd)), so Google rules only rename.
GOOGLE: tuple[Rule, ...] = (
    Rule(("patch_embed/kernel",), "embedding/kernel"),
    Rule(("patch_embed/bias",), "embedding/bias"),
    Rule(("cls_token",), "cls"),
    Rule(("posemb/pos_embedding",), "Transformer/posembed_input/pos_embedding",
         big_vision="pos_embedding"),
    *_google_block(),
    Rule(("encoder/norm/scale",), "Transformer/encoder_norm/scale"),
    Rule(("encoder/norm/bias",), "Transformer/encoder_norm/bias"),
    *_google_map_head(),
    Rule(("pre_logits/kernel",), "pre_logits/kernel"),
    Rule(("pre_logits/bias",), "pre_logits/bias"),
    Rule(("head/kernel",), "head/kernel"),
    Rule(("head/bias",), "head/bias"),
)


def _timm_norm(ours: str, theirs: str) -> list[Rule]:
    return [Rule((f"{ours}/scale",), f"{theirs}.weight"), Rule((f"{ours}/bias",), f"{theirs}.bias")]


def _timm_linear(ours: str, theirs: str) -> list[Rule]:
    return [Rule((f"{ours}/kernel",), f"{theirs}.weight", "linear"),
            Rule((f"{ours}/bias",), f"{theirs}.bias")]


def _timm_attention(ours: str, theirs: str, q: str, kv: str) -> list[Rule]:
    """Our separate q/k/v with a heads axis <-> timm's fused Linear layers (qkv, or q + kv)."""
    rules, groups = [], ((q, ("query",)), (kv, ("key", "value"))) if kv else ((q, QKV),)
    for fused, names in groups:
        rules.append(Rule(tuple(f"{ours}/{n}/kernel" for n in names), f"{theirs}.{fused}.weight",
                          "heads_in"))
        rules.append(Rule(tuple(f"{ours}/{n}/bias" for n in names), f"{theirs}.{fused}.bias",
                          "heads_bias"))
    return rules + [Rule((f"{ours}/out/kernel",), f"{theirs}.proj.weight", "heads_out"),
                    Rule((f"{ours}/out/bias",), f"{theirs}.proj.bias")]


QKV = ("query", "key", "value")
_B, _TB = "encoder/blocks/{i}", "blocks.{i}"
TIMM: tuple[Rule, ...] = (
    Rule(("patch_embed/kernel",), "patch_embed.proj.weight", "conv"),
    Rule(("patch_embed/bias",), "patch_embed.proj.bias"),
    Rule(("cls_token",), "cls_token"),
    Rule(("reg_tokens",), "reg_token"),
    Rule(("posemb/pos_embedding",), "pos_embed"),
    *_timm_norm(f"{_B}/norm1", f"{_TB}.norm1"),
    *_timm_attention(f"{_B}/attn", f"{_TB}.attn", "qkv", ""),
    *_timm_norm(f"{_B}/attn/q_norm", f"{_TB}.attn.q_norm"),
    *_timm_norm(f"{_B}/attn/k_norm", f"{_TB}.attn.k_norm"),
    Rule((f"{_B}/ls1/gamma",), f"{_TB}.ls1.gamma"),
    *_timm_norm(f"{_B}/norm2", f"{_TB}.norm2"),
    *_timm_linear(f"{_B}/mlp/fc1", f"{_TB}.mlp.fc1"),
    *_timm_linear(f"{_B}/mlp/fc2", f"{_TB}.mlp.fc2"),
    Rule((f"{_B}/ls2/gamma",), f"{_TB}.ls2.gamma"),
    *_timm_norm("encoder/norm", "norm"),
    Rule(("map_head/probe",), "attn_pool.latent"),
    *_timm_attention("map_head/attn", "attn_pool", "q", "kv"),
    *_timm_norm("map_head/norm", "attn_pool.norm"),
    *_timm_linear("map_head/mlp/fc1", "attn_pool.mlp.fc1"),
    *_timm_linear("map_head/mlp/fc2", "attn_pool.mlp.fc2"),
    *_timm_linear("pre_logits", "pre_logits.fc"),  # older timm's representation layer
    *_timm_linear("head", "head"),
)
TABLES = {"google": GOOGLE, "timm": TIMM}

# Keys of timm variants we cannot represent exactly, with the reason.
_TIMM_UNSUPPORTED = {
    "fc_norm.": "timm's fc_norm applies the final LayerNorm after average pooling (global_pool="
                "'avg'); vit_jax normalises before pooling, which is a different function",
    "norm_pre.": "pre-norm (CLIP-style) ViTs have a LayerNorm before the blocks; not supported",
    "attn.norm.": "scale_attn_norm is not supported",
    "mlp.norm.": "scale_mlp_norm is not supported",
    "patch_embed.norm.": "a norm inside the patch embedding is not supported",
}


def _expand(rule: Rule, depth: int, dialect: str = "vit") -> list[tuple[tuple[str, ...], str]]:
    theirs = rule.big_vision if dialect == "big_vision" and rule.big_vision else rule.theirs
    if "{i}" not in theirs:
        return [(rule.ours, theirs)]
    return [(tuple(n.format(i=i) for n in rule.ours), theirs.format(i=i)) for i in range(depth)]


# ----------------------------------------------------------------------------------------------
# Files.


def file_kind(path: str | Path) -> str | None:
    """'.npz' or '.safetensors' by the name, else by the content (a hub cache blob behind a
    symlink has neither suffix once resolved); None for anything else."""
    path = Path(path)
    if path.suffix in (".npz", ".safetensors"):
        return path.suffix
    if not path.is_file():
        return None
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":  # a zip archive: what np.savez writes
        return ".npz"
    if len(head) == 9 and head[8:9] == b"{":  # u64 header length, then the JSON header
        return ".safetensors"
    return None


def read_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays by name, metadata) of a ``.npz`` or ``.safetensors`` file."""
    path = paths.absolute(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    kind = file_kind(path)
    if kind == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    if kind == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        key = params_lib.CONFIG_KEY
        meta = {key: str(arrays.pop(key))} if key in arrays else {}
        return arrays, meta
    raise ValueError(f"{path}: unknown checkpoint file type {path.name!r}; use .npz (Google or "
                     "vit_jax) or .safetensors (timm), or a training workdir")


def detect_format(arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> str:
    if params_lib.CONFIG_KEY in meta and meta.get("format") != "timm":
        return "vit_jax"
    names = list(arrays)
    if any(n.startswith(("blocks.", "patch_embed.")) for n in names):
        return "timm"
    if any("Transformer/" in n or n.startswith(("embedding/", "params/")) for n in names):
        return "google"
    raise ValueError(f"cannot tell the checkpoint format from its keys (first: {names[:5]}); "
                     f"expected Google ViT/big_vision, timm, or vit_jax names")


# ----------------------------------------------------------------------------------------------
# Import.


def _google_prepare(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """Strips ``params/``, unstacks scanned blocks, moves pre-2022 big_vision posemb."""
    arrays = dict(arrays)
    if any(k.startswith("params/") for k in arrays):  # a training checkpoint: params only
        arrays = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    for k in [k for k in arrays if k.startswith("Transformer/encoderblock/")]:
        stacked, rest = arrays.pop(k), k[len("Transformer/encoderblock/"):]
        arrays.update({f"Transformer/encoderblock_{i}/{rest}": a for i, a in enumerate(stacked)})
    if "Transformer/pos_embedding" in arrays:
        arrays["pos_embedding"] = arrays.pop("Transformer/pos_embedding")
    original = any("MultiHeadDotProductAttention_1" in k or "posembed_input" in k for k in arrays)
    return arrays, "vit" if original else "big_vision"


def _ours_view(arrays, table, dialect, depth) -> Callable[[str], np.ndarray | None]:
    """Our-layout array for a one-to-one rule's our name, or None when absent."""
    lookup = {}
    for rule in table:
        if len(rule.ours) == 1 and not LAYOUTS[rule.layout].needs_heads:
            for ours, theirs in _expand(rule, depth, dialect):
                lookup[ours[0]] = (theirs, rule.layout)

    def view(name: str):
        theirs, layout = lookup.get(name, (None, None))
        if theirs not in arrays:
            return None
        return LAYOUTS[layout].to_ours(arrays[theirs], 1, None)[0]

    return view


def _depth(arrays, table, dialect) -> int:
    norm1 = next(r for r in table if r.ours[0] == "encoder/blocks/{i}/norm1/scale")
    pattern = (norm1.big_vision if dialect == "big_vision" and norm1.big_vision
               else norm1.theirs)
    regex = re.compile(re.escape(pattern).replace(r"\{i\}", r"(\d+)") + "$")
    found = {int(m[1]) for k in arrays if (m := regex.match(k))}
    if found != set(range(len(found))):
        raise ValueError(f"encoder blocks are not numbered 0..n-1: found {sorted(found)}")
    return len(found)


def infer_config(arrays: Mapping[str, np.ndarray], fmt: str, dialect: str = "vit", *,
                 variant: str | None = None, num_heads: int | None = None,
                 image_size=None, pool: str | None = None, posemb: str | None = None,
                 gelu_approximate: bool | None = None,
                 known: Mapping | None = None) -> tuple[dict, tuple[int, int]]:
    """The architecture a checkpoint holds, from its names and shapes -> (config, its grid).

    Shapes decide; ``variant``/``num_heads`` fill in what shapes cannot say (timm's fused qkv
    hides the head count) and must agree with them. ``image_size`` is the size to build the
    model for; the checkpoint's own grid is taken from it when it fits the position table,
    else assumed square (as timm does). ``gelu_approximate`` None: the form ``known`` records,
    else the family's (see the parity note). ``known`` is a config stored by us in the file.
    """
    table = TABLES[fmt]
    depth = _depth(arrays, table, dialect)
    view = _ours_view(arrays, table, dialect, depth)
    known = dict(known or {})
    image_size = image_size if image_size is not None else known.get("image_size")
    pool, posemb = pool or known.get("pool"), posemb or known.get("posemb")
    kernel = view("patch_embed/kernel")
    if kernel is None or depth == 0:
        raise ValueError(f"no patch embedding or encoder blocks found: is this a ViT {fmt} "
                         f"checkpoint? first keys: {list(arrays)[:8]}")
    ph, pw, channels, width = kernel.shape
    mlp_dim = view("encoder/blocks/0/mlp/fc1/kernel").shape[1]
    heads = _infer_heads(view, width, depth, mlp_dim, variant, num_heads, known)
    if variant:
        _check_variant(variant, dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads,
                                     patch_size=(ph, pw)))
    cls, reg = view("cls_token"), view("reg_tokens")
    prefix = int(cls is not None) + (reg.shape[1] if reg is not None else 0)
    table_pe = view("posemb/pos_embedding")
    if table_pe is None and posemb in (None, "learn"):
        raise ValueError("the checkpoint has no learned position embedding; pass posemb="
                         "'sincos2d' (big_vision fixed sine-cosine) or 'none', and image_size")
    if table_pe is not None:
        grid, includes = _posemb_grid(table_pe.shape[1], prefix, (ph, pw), image_size)
    else:
        if image_size is None:
            raise ValueError("pass image_size: the checkpoint has no position table to infer it")
        grid, includes = grid_size(as_pair(image_size, "image_size"), (ph, pw)), True
    target = (as_pair(image_size, "image_size") if image_size is not None
              else (grid[0] * ph, grid[1] * pw))
    head, pre = view("head/kernel"), view("pre_logits/kernel")
    config = dict(
        variant=params_lib.variant_name(width, depth, mlp_dim, heads, (ph, pw)),
        num_classes=head.shape[1] if head is not None else None,
        image_size=list(target), patch_size=[ph, pw], in_channels=channels, width=width,
        depth=depth, mlp_dim=mlp_dim, num_heads=heads, posemb=posemb or "learn",
        posemb_includes_prefix=includes,
        posemb_resample=known.get("posemb_resample", FAMILY_RESAMPLE.get(fmt)),
        class_token=cls is not None, num_registers=prefix - int(cls is not None),
        pool=pool or ("map" if view("map_head/probe") is not None
                      else "cls" if cls is not None else "gap"),
        layerscale=1e-5 if view("encoder/blocks/0/ls1/gamma") is not None else None,
        qk_norm=view("encoder/blocks/0/attn/q_norm/scale") is not None,
        representation_size=pre.shape[1] if pre is not None else None,
        # Google's Flax ViTs computed the tanh GELU; timm the exact one (see the parity note).
        gelu_approximate=(gelu_approximate if gelu_approximate is not None
                          else known.get("gelu_approximate", fmt == "google")),
    )
    return config, grid


def _infer_heads(view, width, depth, mlp_dim, variant, num_heads, known) -> int:
    q = view("encoder/blocks/0/attn/query/kernel")  # Google: (D, H, hd)
    qn = view("encoder/blocks/0/attn/q_norm/scale")  # qk-norm: (hd,)
    found = (q.shape[1] if q is not None else width // qn.shape[0] if qn is not None
             else known.get("num_heads"))
    given = num_heads or (parse_variant(variant)["num_heads"] if variant else None)
    if found and given and found != given:
        raise ValueError(f"the checkpoint has {found} heads but {given} were requested")
    if not (found or given):
        match = [f"{n!r} ({s.num_heads} heads)" for n, s in SIZES.items()
                 if (s.width, s.depth, s.mlp_dim) == (width, depth, mlp_dim)]
        hint = f"; the standard size with these shapes is {match[0]}" if match else ""
        raise ValueError(f"timm checkpoints do not record the number of attention heads (qkv is "
                         f"one ({3 * width}, {width}) matrix): pass --variant or --num_heads"
                         f" (width {width}, depth {depth}, mlp_dim {mlp_dim}{hint})")
    return int(found or given)


def _check_variant(variant: str, found: dict) -> None:
    want = parse_variant(variant)
    bad = [f"{k}: checkpoint {found[k]}, variant {want[k]}" for k in want if want[k] != found[k]]
    if bad:
        raise ValueError(f"variant {variant!r} does not match the checkpoint: {'; '.join(bad)}"
                         + (" (to change the patch size use vit_jax.models.flexi."
                            "change_patch_size after loading)" if "patch_size" in want else ""))


def _posemb_grid(length: int, prefix: int, patch, image_size) -> tuple[tuple[int, int], bool]:
    """(checkpoint grid, table includes the prefix rows) from the table's length."""
    if image_size is not None:
        gh, gw = grid_size(as_pair(image_size, "image_size"), patch)
        for includes in (True, False):
            if length == gh * gw + (prefix if includes else 0):
                return (gh, gw), includes
    options = [(n, inc) for n, inc in ((length - prefix, True), (length, False))
               if n > 0 and math.isqrt(n) ** 2 == n and (inc or prefix)]
    if prefix == 0:
        options = options[:1]
    if len(options) != 1:
        raise ValueError(f"cannot tell the grid of a {length}-row position table with {prefix} "
                         f"prefix tokens; pass the checkpoint's image_size")
    n, includes = options[0]
    return (math.isqrt(n), math.isqrt(n)), includes


def import_params(arrays: Mapping[str, np.ndarray], fmt: str, config: Mapping,
                  dialect: str = "vit") -> dict[str, np.ndarray]:
    """Their arrays -> our loop-form names for the architecture ``config`` describes."""
    model = nnx.eval_shape(lambda: params_lib.build_architecture(config))
    expected = flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    ours, used, missing = {}, set(), []
    for rule in TABLES[fmt]:
        for names, theirs in _expand(rule, config["depth"], dialect):
            if not all(n in expected for n in names):
                continue
            if theirs not in arrays:
                missing.append(theirs)
                continue
            layout = LAYOUTS[rule.layout]
            arrs = layout.to_ours(np.asarray(arrays[theirs], np.float32), len(names),
                                  config["num_heads"])
            ours.update(zip(names, arrs, strict=True))
            used.add(theirs)
    unknown = sorted(set(arrays) - used)
    if missing or unknown:
        hints = sorted({f"{key}: {why}" for key in unknown
                        for pat, why in _TIMM_UNSUPPORTED.items() if pat in key})
        raise ValueError(f"{fmt} checkpoint does not fit the inferred architecture "
                         f"{brief(config)}:" + params_lib.listing("missing", missing)
                         + params_lib.listing("unknown", unknown)
                         + params_lib.listing("unsupported", hints))
    return ours


def brief(config: Mapping) -> str:
    keys = ("width", "depth", "num_heads", "patch_size", "class_token", "pool", "posemb")
    return "(" + ", ".join(f"{k}={config[k]}" for k in keys) + ")"


def import_checkpoint(path: str | Path, *, resample: str | None = None,
                      **overrides) -> tuple[dict, dict[str, np.ndarray]]:
    """Any supported file -> (our config, our loop-form params). ``overrides``: ``variant``,
    ``num_heads``, ``image_size``, ``pool``, ``posemb``, ``gelu_approximate`` (see
    ``infer_config``). A different ``image_size`` resamples the position table with
    ``resample`` (default: the family's)."""
    arrays, meta = read_file(path)
    fmt = detect_format(arrays, meta)
    if fmt == "vit_jax":
        given = sorted(k for k, v in {**overrides, "resample": resample}.items() if v is not None)
        if given:
            raise ValueError(f"{path} is already a vit_jax checkpoint; {given} apply to Google "
                             "and timm inputs only")
        return params_lib.read_npz(path)
    dialect = "vit"
    if fmt == "google":
        arrays, dialect = _google_prepare(arrays)
    known = json.loads(meta[params_lib.CONFIG_KEY]) if params_lib.CONFIG_KEY in meta else None
    config, grid = infer_config(arrays, fmt, dialect, known=known, **overrides)
    params = import_params(arrays, fmt, config, dialect)
    new_grid = grid_size(tuple(config["image_size"]), tuple(config["patch_size"]))
    if "posemb/pos_embedding" in params and new_grid != grid:
        prefix = (int(config["class_token"]) + config["num_registers"]
                  if config["posemb_includes_prefix"] else 0)
        method = check_method(resample or config["posemb_resample"])
        params["posemb/pos_embedding"] = np.asarray(resample_posemb(
            params["posemb/pos_embedding"], new_grid, old_grid=grid, num_prefix_tokens=prefix,
            method=method))
    return config, params


# ----------------------------------------------------------------------------------------------
# Export.


def export_params(params: Mapping[str, np.ndarray], fmt: str,
                  dialect: str = "vit") -> dict[str, np.ndarray]:
    """Our flat params -> their names and layouts; our names no rule covers are an error."""
    params = {k: np.asarray(v) for k, v in params_lib.to_loop_names(params).items()}
    depth = len({n.split("/")[2] for n in params if n.startswith("encoder/blocks/")})
    out, covered = {}, set()
    for rule in TABLES[fmt]:
        for names, theirs in _expand(rule, depth, dialect):
            present = [n in params for n in names]
            if any(present) and not all(present):
                raise ValueError(f"{theirs} needs all of {names}")
            if all(present):
                # contiguous: safetensors' numpy writer stores a transposed view's raw buffer
                out[theirs] = np.ascontiguousarray(
                    LAYOUTS[rule.layout].to_theirs([params[n] for n in names]))
                covered.update(names)
    left = sorted(set(params) - covered)
    if left:
        raise ValueError(f"these parameters have no {fmt} equivalent: {', '.join(left)}")
    return out


def export_google(model: nnx.Module, dialect: str = "vit") -> dict[str, np.ndarray]:
    """Google names (``dialect`` 'vit' = original ViT, or 'big_vision'), layouts adjusted."""
    cfg, params = params_lib.architecture(model), params_lib.flat_params(model)
    if cfg["num_registers"] or cfg["qk_norm"] or cfg["layerscale"]:
        raise ValueError("Google ViT checkpoints have no register tokens, qk-norm or layerscale")
    if cfg["class_token"] and cfg["pool"] != "cls":
        raise ValueError(f"pool={cfg['pool']!r} with a class token has no Google equivalent "
                         "(Google models have a class token only for classifier='token')")
    pe = params.get("posemb/pos_embedding")
    if pe is not None and cfg["class_token"]:
        # The original ViT adds the table after prepending [cls]; big_vision before. Both are
        # exact: a zero row for [cls], or the [cls] row folded into the token.
        if dialect == "vit" and not cfg["posemb_includes_prefix"]:
            params["posemb/pos_embedding"] = np.concatenate([np.zeros_like(pe[:, :1]), pe], 1)
        if dialect == "big_vision" and cfg["posemb_includes_prefix"]:
            params["cls_token"] = params["cls_token"] + pe[:, :1]
            params["posemb/pos_embedding"] = pe[:, 1:]
    return export_params(params, "google", dialect)


def export_timm(model: nnx.Module) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(timm state dict as numpy, safetensors metadata with the timm model arguments)."""
    cfg = params_lib.architecture(model)
    # pool='gap' is timm's global_pool='avg' with fc_norm=False (both skip the prefix tokens).
    timm_args = dict(
        img_size=cfg["image_size"], patch_size=cfg["patch_size"], in_chans=cfg["in_channels"],
        embed_dim=cfg["width"], depth=cfg["depth"], num_heads=cfg["num_heads"],
        mlp_ratio=cfg["mlp_dim"] / cfg["width"], class_token=cfg["class_token"],
        reg_tokens=cfg["num_registers"], no_embed_class=not cfg["posemb_includes_prefix"],
        global_pool={"cls": "token", "gap": "avg", "map": "map", "none": ""}[cfg["pool"]],
        fc_norm=False, qk_norm=cfg["qk_norm"], init_values=cfg["layerscale"],
        num_classes=cfg["num_classes"] or 0, pos_embed="learn" if cfg["posemb"] == "learn"
        else "none")
    meta = {"format": "timm", "timm_args": json.dumps(timm_args),
            params_lib.CONFIG_KEY: json.dumps(cfg)}
    return export_params(params_lib.flat_params(model), "timm"), meta


def save_google_npz(model: nnx.Module, path: str | Path, dialect: str = "vit") -> Path:
    """Google's names only (no config key: Google's loaders must read the file as theirs)."""
    path = paths.output_file(path)
    with path.open("wb") as f:
        np.savez(f, **export_google(model, dialect))
    return path


def save_timm_safetensors(model: nnx.Module, path: str | Path) -> Path:
    from safetensors.numpy import save_file

    arrays, meta = export_timm(model)
    path = paths.output_file(path)
    paths.write_like_open(path, lambda p: save_file(arrays, str(p), metadata=meta))
    return path
