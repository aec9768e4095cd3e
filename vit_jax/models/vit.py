"""The Vision Transformer: patch embedding, position embedding, prefix tokens, encoder, head.

``model(images, train=False)`` returns logits; ``return_extras=True`` also returns a dict of
intermediates (tokens, pre-logits, per-layer attention weights) for evaluators and notebooks.
``model(pack_images(...)[0])`` runs packed sequences of images of any sizes (``vit_jax.packing``)
and returns logits per image slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.checks import is_int, is_number
from vit_jax.models.attention import KEY_CHUNK, QUERY_CHUNK, cudnn_unsupported
from vit_jax.models.encoder import Encoder
from vit_jax.models.heads import POOLS, MAPHead, pool_segments, pool_tokens
from vit_jax.models.layers import Dense, dropout
from vit_jax.models.patch_embed import METHODS, PatchEmbed, grid_size
from vit_jax.models.posemb import PositionEmbedding
from vit_jax.models.resample import DEFAULT_METHOD
from vit_jax.packing import is_packed
from vit_jax.sharding import constrain
from vit_jax.sizes import as_pair

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "auto": None}


def compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
    """The activations' dtype for ``dtype=name``; parameters, optimizer state, softmax and
    loss stay float32 whatever it is. ``auto``: bfloat16 on GPU and TPU (their matmul units
    run it at several times the float32 rate), float32 on CPU: even on an AMX Xeon, where bf16
    matmuls run 4.4x faster, conversions leave the bf16 train step 1.07x the f32 one
    (benchmarks/RESULTS_INTEL.md), not worth its rounding; elsewhere it is slower."""
    if name != "auto":
        return DTYPES[name]
    return jnp.float32 if (backend or jax.default_backend()) == "cpu" else jnp.bfloat16


class VisionTransformer(nnx.Module):
    """ViT with the options users of big_vision and timm expect (see ``create_model``)."""

    def __init__(
        self, *, num_classes: int | None, width: int, depth: int, mlp_dim: int, num_heads: int,
        image_size: int | Sequence[int] = 224, patch_size: int | Sequence[int] = 16,
        in_channels: int = 3, posemb: str = "learn", posemb_includes_prefix: bool = True,
        posemb_resample: str = DEFAULT_METHOD,
        class_token: bool = True, num_registers: int = 0, pool: str = "cls",
        dropout: float = 0.0, attn_dropout: float = 0.0, drop_path: float = 0.0,
        layerscale: float | None = None, qk_norm: bool = False, head_zero_init: bool = True,
        representation_size: int | None = None, dtype: str = "auto", scan: bool = False,
        remat_policy: str = "none", attention: str = "auto",
        attention_query_chunk: int = QUERY_CHUNK, attention_key_chunk: int = KEY_CHUNK,
        patch_embed_method: str = "conv", gelu_approximate: bool = False,
        flexi_patch_sizes: Sequence[int] = (), flexi_weights: Sequence[float] = (),
        seed: int = 0, rngs: nnx.Rngs | None = None,
    ):
        self.image_size = as_pair(image_size, "image_size")
        self.patch_size = as_pair(patch_size, "patch_size")
        self.grid = grid_size(self.image_size, self.patch_size)
        _check_choice("pool", pool, POOLS)
        _check_choice("dtype", dtype, tuple(DTYPES))
        _check_choice("patch_embed_method", patch_embed_method, METHODS)
        _check_sizes(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads,
                     in_channels=in_channels, num_registers=num_registers,
                     representation_size=representation_size)
        _check_rates(dropout=dropout, attn_dropout=attn_dropout, drop_path=drop_path)
        self.flexi_patch_sizes, self.flexi_weights = _check_flexi(
            flexi_patch_sizes, flexi_weights, self.image_size)
        if layerscale is not None and not (is_number(layerscale) and layerscale > 0):
            raise ValueError(f"layerscale={layerscale!r} must be None (off) or a number > 0 "
                             "(the initial scale, e.g. 1e-5)")
        if pool == "cls" and not class_token:
            raise ValueError(
                "pool='cls' needs class_token=True; use pool='gap' or 'map' without it")
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        rngs = rngs if rngs is not None else nnx.Rngs(params=seed, dropout=seed + 1)
        self.dtype = compute_dtype(dtype)
        if attention == "cudnn" and (why := cudnn_unsupported(
                jax.default_backend(), self.dtype, width // num_heads)):
            raise ValueError(f"attention='cudnn': {why}; 'auto' uses cuDNN where it applies")
        self.pool = pool
        self.gelu_approximate = gelu_approximate
        self.in_channels = in_channels
        self.num_prefix = int(class_token) + num_registers
        self.dropout_rate = dropout
        self.stochastic = bool(dropout or attn_dropout or drop_path)
        self.rngs = rngs  # the dropout stream, used when train=True and no key is given

        self.patch_embed = PatchEmbed(self.patch_size, in_channels, width, rngs=rngs,
                                      method=patch_embed_method)
        self.posemb = PositionEmbedding(posemb, self.grid, width, num_prefix=self.num_prefix,
                                        includes_prefix=posemb_includes_prefix, rngs=rngs,
                                        resample_method=posemb_resample)
        zeros = nnx.initializers.zeros_init()
        self.cls_token = (nnx.Param(zeros(rngs.params(), (1, 1, width)),
                                    logical_axes=(None, None, "embed")) if class_token else None)
        self.reg_tokens = (nnx.Param(nnx.initializers.normal(0.02)(
            rngs.params(), (1, num_registers, width)), logical_axes=(None, None, "embed"))
            if num_registers else None)
        self.encoder = Encoder(depth, width, mlp_dim, num_heads, rngs=rngs, scan=scan,
                               remat_policy=remat_policy, drop_path=drop_path, dropout=dropout,
                               attn_dropout=attn_dropout, layerscale=layerscale, qk_norm=qk_norm,
                               attention=attention, query_chunk=attention_query_chunk,
                               key_chunk=attention_key_chunk, gelu_approximate=gelu_approximate)
        self.map_head = (MAPHead(width, mlp_dim, num_heads, rngs=rngs,
                                 gelu_approximate=gelu_approximate) if pool == "map" else None)
        self.pre_logits = (Dense(width, representation_size, rngs=rngs, axes=("embed", "mlp"))
                           if representation_size else None)
        features = representation_size or width
        head_init = zeros if head_zero_init else nnx.initializers.xavier_uniform()
        self.head = (Dense(features, num_classes, rngs=rngs, axes=("embed", "classes"),
                           kernel_init=head_init) if num_classes else None)

    def embed(self, images: Array, patch_size: int | None = None) -> Array:
        """Images -> (B, prefix + patches, D) tokens with position information added;
        ``patch_size``: another patch size than the model's (FlexiViT, see ``__call__``)."""
        if images.ndim != 4 or images.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (batch, height, width, {self.in_channels}), "
                f"got {images.shape}"
            )
        patch = self.patch_size if patch_size is None else as_pair(patch_size, "patch_size")
        x = self.patch_embed(images.astype(self.dtype), patch)
        grid = grid_size(images.shape[1:3], patch)
        pe = self.posemb(grid)
        if pe is not None and not self.posemb.includes_prefix:
            x = x + pe.astype(x.dtype)
        prefix = [t[...] for t in (self.cls_token, self.reg_tokens) if t is not None]
        if prefix:
            prefix = jnp.concatenate(prefix, axis=1).astype(x.dtype)
            x = jnp.concatenate([jnp.broadcast_to(prefix, (x.shape[0],) + prefix.shape[1:]), x],
                                axis=1)
        if pe is not None and self.posemb.includes_prefix:
            x = x + pe.astype(x.dtype)
        # Pin tokens to batch sharding: with FSDP, GSPMD would otherwise split them along
        # `embed` in the backward pass and all-gather the whole batch (no-op without a mesh).
        return constrain(x, ("batch", None, None))

    def embed_packed(self, packed: Mapping[str, Array]) -> Array:
        """A packed batch (``vit_jax.pack_images``) -> (B, L, D) tokens with each token's
        position embedding from its (row, column) in its own image."""
        if self.num_prefix:
            raise ValueError("packed input needs class_token=False and num_registers=0 (one "
                             "sequence holds several images; pool them with pool='gap' or "
                             "'map')")
        if self.pool not in ("gap", "map"):
            raise ValueError(f"packed input pools each image with pool='gap' or 'map'; this "
                             f"model has pool={self.pool!r}")
        x = self.patch_embed.embed_patches(jnp.asarray(packed["patches"]).astype(self.dtype))
        grids = packed.get("grids")
        pe = self.posemb.at(jnp.asarray(packed["positions"]), max_side=x.shape[1],
                            grids=None if grids is None else jnp.asarray(grids))
        if pe is not None:
            x = x + pe.astype(x.dtype)
        return constrain(x, ("batch", None, None))

    def __call__(self, images: Array | Mapping[str, Array], *, train: bool = False,
                 rng: Array | None = None, return_extras: bool = False,
                 return_attention: bool = False, patch_size: int | None = None):
        """Logits (B, classes) of images (B, H, W, C); or of a packed batch
        (``vit_jax.pack_images``): (B, K, classes), one row per image slot (its
        ``image_mask`` says which hold an image).

        ``patch_size`` (FlexiViT): run with patches of that size, the patch kernel PI-resized
        and the position table resampled to the new grid inside the computation, so training
        at a random size each step trains one model for every size (``flexi_patch_sizes``)."""
        key = None
        if train and self.stochastic:
            key = rng if rng is not None else self.rngs.dropout()
        keys = jax.random.split(key) if key is not None else (None, None)
        extras = {}
        packed = images if is_packed(images) else None
        segments = None if packed is None else jnp.asarray(packed["segment_ids"])
        if packed is not None and patch_size is not None:
            raise ValueError("packed input is cut into patches by pack_images; patch_size "
                             "applies to images only")
        x = self.embed(images, patch_size) if packed is None else self.embed_packed(packed)
        x = dropout(x, self.dropout_rate, keys[0])
        x, weights = self.encoder(x, key=keys[1], return_weights=return_attention,
                                  segment_ids=segments)
        extras["tokens"] = x
        if return_attention:
            extras["attention"] = weights  # (depth, B, heads, L, L)
        if packed is None:
            x = pool_tokens(x, self.pool, self.num_prefix, self.map_head)
        else:
            x = pool_segments(x, segments, jnp.asarray(packed["image_mask"]).shape[1],
                              self.pool, self.map_head)
        if self.pre_logits is not None:
            x = jnp.tanh(self.pre_logits(x))
        extras["pre_logits"] = x
        out = (self.head(x) if self.head is not None else x).astype(jnp.float32)
        if return_extras or return_attention:
            return out, extras
        return out


def _check_sizes(**sizes) -> None:
    """Counts and widths: positive ints (num_registers may be 0, representation_size None)."""
    for name, value in sizes.items():
        if value is None and name == "representation_size":
            continue
        low = 0 if name == "num_registers" else 1
        if not (is_int(value) and value >= low):
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def _check_flexi(sizes: Sequence[int], weights: Sequence[float],
                 image_size: tuple[int, int]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """FlexiViT's patch sizes (each dividing the image) and their sampling weights (empty =
    uniform), as tuples; errors name the bad value and what is valid."""
    sizes, weights = tuple(sizes or ()), tuple(weights or ())
    for p in sizes:
        if not (is_int(p) and p >= 1):
            raise ValueError(f"flexi_patch_sizes={sizes}: each must be an integer >= 1")
        if image_size[0] % p or image_size[1] % p:
            raise ValueError(f"flexi_patch_sizes={sizes}: {p} does not divide the image size "
                             f"{image_size[0]}x{image_size[1]}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"flexi_patch_sizes={sizes} repeats a size")
    if weights and (len(weights) != len(sizes) or
                    not all(is_number(w) and w > 0 for w in weights)):
        raise ValueError(f"flexi_weights={weights}: one number > 0 per patch size in "
                         f"flexi_patch_sizes={sizes} (or empty = uniform)")
    return sizes, tuple(float(w) for w in weights)


def _check_rates(**rates) -> None:
    for name, value in rates.items():
        if not (is_number(value) and 0 <= value < 1):
            raise ValueError(f"{name}={value!r} must be a rate in [0, 1) (0 = off)")


def _check_choice(name: str, value, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {valid}")
