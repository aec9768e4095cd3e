"""Multi-head attention with separate q/k/v projections and selectable kernels.

Projections keep an explicit heads axis, (D, heads, head_dim), so tensor parallelism can shard
heads and checkpoints of both Google families map onto it without reshuffling.

Kernels (``implementation=``, the model's ``attention=`` option):

- ``standard``: softmax(q kᵀ) v with the (B, H, N, N) weights in memory. Also the fallback whenever
  the weights themselves are needed (``return_weights=True``, attention dropout in training).
- ``xla``: ``jax.nn.dot_product_attention(implementation="xla")``, also materialises N×N.
- ``chunked``: exact attention over query blocks × key blocks with an online softmax (flash
  attention's running max and sum) in plain JAX. Memory grows as N instead of N², forward and
  backward: each query block is ``jax.checkpoint``-ed, so the backward pass recomputes one block's
  (qc, N) scores at a time instead of keeping all N×N. Pixel tokens (patch 1 on 32×32 = 1024
  tokens) need this.
- ``cudnn``: cuDNN's fused (flash) attention through ``jax.nn.dot_product_attention``, on GPU in
  bf16/f16 only (``cudnn_unsupported`` says why not elsewhere, when the model is built). cuDNN
  rejects odd token counts, so an odd count (197 at B/16 with its class token) is padded by one
  token that no query attends to (``key_value_seq_lengths``), and its output row is dropped.
  Packed sequences go through cuDNN's packed layout (``cudnn_attention``).
- ``auto``: cuDNN at even token counts on GPU (``choose_kernel``; odd counts wait for the device
  check to time the padded ``cudnn`` against ``standard``), ``chunked`` for long sequences,
  otherwise ``standard`` (see ``AUTO_CHUNK_MIN_TOKENS`` for the CPU measurement behind the
  threshold).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from vit_jax.models.contract import contract, linear
from vit_jax.models.layers import LayerNorm, dropout, param

Array = jax.Array
IMPLEMENTATIONS = ("standard", "xla", "chunked", "cudnn", "auto")
# Block sizes of ``chunked``: a (B, H, 256, 256) f32 score block per step is big enough for
# efficient matmuls and small next to the N×N it replaces (1/16 of it at N = 1024).
QUERY_CHUNK = 256
KEY_CHUNK = 256
# ``auto`` switches to ``chunked`` from this many keys on: below it the two kernels tie and the
# N×N weights are small, from it chunked is faster (its blocks stay in cache) and needs far
# less scratch (benchmarks/ATTENTION_MEMORY.md). jax.nn.dot_product_attention's "xla" kernel
# also materialises N×N and was never the fastest on CPU, so ``auto`` only uses that function
# on GPU, through cuDNN.
AUTO_CHUNK_MIN_TOKENS = 1024
# A finite "minus infinity" for padded keys: exp() of it is 0 without inf - inf = NaN risks.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


Segments = Array | tuple[Array, Array]


def _query_key_segments(segment_ids: Segments) -> tuple[Array, Array]:
    """(query ids (B, Nq), key ids (B, Nk)) from self-attention's (B, N) or a pair."""
    if isinstance(segment_ids, tuple):
        return segment_ids
    return segment_ids, segment_ids


def _same_segment(q_ids: Array, k_ids: Array) -> Array:
    """(B, 1, Nq, Nk) bool: which query-key pairs share a segment (every kernel's mask)."""
    return q_ids[:, None, :, None] == k_ids[:, None, None, :]


def standard_attention(q: Array, k: Array, v: Array, *, return_weights: bool = False,
                       segment_ids: Segments | None = None) -> tuple[Array, Array | None]:
    """Softmax attention on (B, H, N, hd) inputs; returns the output (B, H, Nq, hd) and, if
    asked, the (B, H, Nq, Nk) weights. ``segment_ids``: a query attends only to keys of its
    own segment (packed sequences, ``vit_jax.packing``): (B, N) for self-attention, or a
    (query ids, key ids) pair.

    The normalisation is deferred: out = (exp(s - max) @ v) / rowsum, dividing the (Nq, hd)
    output instead of the (Nq, Nk) weights: same result (to rounding), fewer operations on the
    large array (README, "Performance").
    """
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    logits = contract("bhqd,bhkd->bhqk", q * scale, k).astype(jnp.float32)
    if segment_ids is not None:
        logits = jnp.where(_same_segment(*_query_key_segments(segment_ids)), logits,
                           _MASK_VALUE)
    # The output does not depend on the shift, so no gradient needs to flow through it.
    shift = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    unnormalised = jnp.exp(logits - shift)
    total = unnormalised.sum(axis=-1, keepdims=True)
    out = contract("bhqk,bhkd->bhqd", unnormalised.astype(v.dtype), v,
                   out_dtype=jnp.float32) / total
    out_dtype = jnp.result_type(q.dtype, v.dtype)
    weights = (unnormalised / total).astype(q.dtype) if return_weights else None
    return out.astype(out_dtype), weights


def _pad_to_multiple(x: Array, axis: int, block: int) -> Array:
    pad = -x.shape[axis] % block
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def _balanced_block(n: int, chunk: int) -> int:
    """The block size for ``n`` tokens: at most ``chunk``, with as few padded tokens as possible.

    With ceil(n / chunk) blocks of equal size the padding is below the number of blocks: 1025
    tokens run as 5 blocks of 205 rather than 5 blocks of 256 (a quarter of them padding), and
    257 as 2 × 129 rather than 2 × 256, which would do 4× the work of one block.
    """
    blocks = -(-n // chunk)
    return -(-n // blocks)


def chunked_attention(q: Array, k: Array, v: Array, *, query_chunk: int = QUERY_CHUNK,
                      key_chunk: int = KEY_CHUNK, segment_ids: Segments | None = None) -> Array:
    """Exact softmax attention on (B, H, N, hd) inputs in O(N) memory (forward and backward).

    Queries go in blocks of ``query_chunk`` (``lax.map``); each block scans key blocks of
    ``key_chunk`` keeping a running max ``m``, running sum ``total`` and output accumulator in
    float32, rescaling by exp(m_old - m_new) as each block raises the max. Lengths that the
    blocks do not divide are padded: padded keys get a -inf logit, padded queries are sliced off.
    The chunk sizes are upper bounds: blocks are balanced (``_balanced_block``) so padding stays
    below one token per block, and the MAP head's single query is one block of 1.
    ``segment_ids`` (as ``standard_attention``'s): each (query block, key block) pair masks the
    logits of tokens in different segments, so memory stays O(N).
    """
    b, h, nq, d = q.shape
    nk = k.shape[2]
    qc, kc = _balanced_block(nq, query_chunk), _balanced_block(nk, key_chunk)
    out_dtype = jnp.result_type(q.dtype, v.dtype)  # as standard_attention's
    q = _pad_to_multiple(q * jnp.asarray(d ** -0.5, q.dtype), 2, qc)
    k, v = _pad_to_multiple(k, 2, kc), _pad_to_multiple(v, 2, kc)
    n_qb, n_kb = q.shape[2] // qc, k.shape[2] // kc
    # Block index leading, for lax.map / lax.scan: (blocks, B, H, chunk, hd).
    q_blocks = jnp.moveaxis(q.reshape(b, h, n_qb, qc, d), 2, 0)
    k_blocks = jnp.moveaxis(k.reshape(b, h, n_kb, kc, d), 2, 0)
    v_blocks = jnp.moveaxis(v.reshape(b, h, n_kb, kc, d), 2, 0)
    # Only the last key block can hold padding; it keeps >= 1 real key, so every running max
    # is a real logit after the first block.
    key_bias = None
    if k.shape[2] != nk:
        key_bias = jnp.where(jnp.arange(n_kb * kc) < nk, 0.0, _MASK_VALUE)
        key_bias = key_bias.astype(jnp.float32).reshape(n_kb, kc)
    q_seg = k_seg = None
    if segment_ids is not None:  # padded queries and keys get segments no real token has
        q_ids, k_ids = _query_key_segments(segment_ids)
        q_seg = jnp.pad(q_ids, ((0, 0), (0, n_qb * qc - nq)), constant_values=-1)
        k_seg = jnp.pad(k_ids, ((0, 0), (0, n_kb * kc - nk)), constant_values=-2)
        q_seg = jnp.moveaxis(q_seg.reshape(b, n_qb, qc), 1, 0)
        k_seg = jnp.moveaxis(k_seg.reshape(b, n_kb, kc), 1, 0)

    # The checkpoint is what makes the backward linear: without it the outer map would keep
    # every block's (qc, Nk) probabilities, i.e. all N×N of them, as residuals.
    @functools.partial(jax.checkpoint, prevent_cse=False)
    def query_block(inputs) -> Array:
        qi, qs = inputs

        def key_step(carry, block):
            m, total, acc = carry
            kj, vj, bias, ks = block
            s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj, preferred_element_type=jnp.float32)
            if bias is not None:
                s = s + bias
            if ks is not None:
                s = jnp.where(_same_segment(qs, ks), s, _MASK_VALUE)
            # The output does not depend on m (it cancels), so no gradient flows through it.
            m_new = jax.lax.stop_gradient(jnp.maximum(m, s.max(axis=-1)))
            p = jnp.exp(s - m_new[..., None])
            correction = jnp.exp(m - m_new)
            total = total * correction + p.sum(axis=-1)
            pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(vj.dtype), vj,
                            preferred_element_type=jnp.float32)
            return (m_new, total, acc * correction[..., None] + pv), None

        init = (jnp.full((b, h, qc), _MASK_VALUE, jnp.float32),
                jnp.zeros((b, h, qc), jnp.float32),
                jnp.zeros((b, h, qc, d), jnp.float32))
        (_, total, acc), _ = jax.lax.scan(key_step, init,
                                          (k_blocks, v_blocks, key_bias, k_seg))
        return (acc / total[..., None]).astype(out_dtype)

    out = jax.lax.map(query_block, (q_blocks, q_seg))  # (n_qb, B, H, qc, hd)
    return jnp.moveaxis(out, 0, 2).reshape(b, h, n_qb * qc, d)[:, :, :nq]


def _bnhd(x: Array) -> Array:
    return jnp.swapaxes(x, 1, 2)  # (B, H, N, hd) <-> (B, N, H, hd), jax.nn's layout


def cudnn_unsupported(backend: str, dtype, head_dim: int) -> str | None:
    """Why cuDNN's fused attention cannot run here (None: it can): it is a GPU library, its
    fused kernel takes half precision only, and head_dim a multiple of 8 up to 128."""
    if backend != "gpu":
        return f"cuDNN attention needs a GPU (this backend: {backend})"
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return (f"cuDNN attention needs a bfloat16 or float16 compute dtype, got "
                f"{jnp.dtype(dtype).name} (model.dtype='auto' is bfloat16 on GPU)")
    if head_dim % 8 or head_dim > 128:
        return f"cuDNN attention needs head_dim a multiple of 8 up to 128, got {head_dim}"
    return None


def choose_kernel(backend: str, dtype, head_dim: int, num_keys: int,
                  num_queries: int | None = None, segmented: bool = False) -> str:
    """What ``auto`` runs: cuDNN's fused attention on GPU where it applies
    (``cudnn_unsupported``) at even query and key counts, else ``chunked`` from
    ``AUTO_CHUNK_MIN_TOKENS`` keys on, else ``standard``.

    Even lengths: cuDNN rejects odd ones ("Unsupported sequence length", jax 0.11.2 on an H200:
    benchmarks/RESULTS_GPU.md). ``attention="cudnn"`` serves them padded by one masked key;
    ``auto`` takes that path once the device check has timed it against ``standard``. Until
    then a ViT with a class token (197 tokens at B/16) runs ``standard`` on GPU under ``auto``.
    ``segmented`` (packed sequences): the plain-JAX kernels, which take segment masks."""
    num_queries = num_keys if num_queries is None else num_queries
    if (not segmented and cudnn_unsupported(backend, dtype, head_dim) is None
            and num_keys % 2 == 0 and num_queries % 2 == 0):
        return "cudnn"
    return _plain_kernel(num_keys)


def cudnn_attention(q: Array, k: Array, v: Array, segment_ids: Array | None = None, *,
                    implementation: str = "cudnn") -> Array:
    """cuDNN's fused attention on (B, H, N, hd) inputs, any token counts: an odd count is padded
    by one token, which no query attends to (``key_value_seq_lengths``: cuDNN's padding mask)
    and whose own output row is dropped, so the result and its gradients are those of the
    unpadded attention. ``implementation="xla"`` runs the same padding through XLA (how the CPU
    tests check it).

    ``segment_ids`` (B, N), packed self-attention (``vit_jax.pack_images``: each image's tokens
    contiguous, ids 1..K in order, padding 0): cuDNN's packed layout, each image one ragged
    sequence given by its length and offset (``segment_lengths_and_offsets``), through jax's
    cuDNN module (``jax._src``: ``jax.nn.dot_product_attention`` does not take offsets; Hopper
    or later). Padding tokens belong to no sequence: their output is set to 0."""
    num_queries, num_keys = q.shape[2], k.shape[2]

    def even(x: Array, n: int) -> Array:
        return jnp.pad(_bnhd(x), ((0, 0), (0, n % 2), (0, 0), (0, 0)))

    if segment_ids is None:
        lengths = jnp.full((k.shape[0],), num_keys, jnp.int32) if num_keys % 2 else None
        out = jax.nn.dot_product_attention(even(q, num_queries), even(k, num_keys),
                                           even(v, num_keys), key_value_seq_lengths=lengths,
                                           implementation=implementation)
        return _bnhd(out[:, :num_queries])
    from jax._src.cudnn.fused_attention_stablehlo import MaskType, dot_product_attention

    ids = jnp.pad(segment_ids, ((0, 0), (0, num_keys % 2)))  # the extra token is padding
    lengths, offsets = segment_lengths_and_offsets(ids)
    out = dot_product_attention(even(q, num_keys), even(k, num_keys), even(v, num_keys),
                                q_seqlen=lengths, kv_seqlen=lengths, q_offsets=offsets,
                                kv_offsets=offsets, scale=q.shape[-1] ** -0.5,
                                mask_type=MaskType.PADDING)
    out = jnp.where(ids[:, :, None, None] > 0, out, jnp.zeros((), out.dtype))
    return _bnhd(out[:, :num_keys])


def segment_lengths_and_offsets(segment_ids: Array) -> tuple[Array, Array]:
    """cuDNN's description of packed sequences from (B, N) segment ids (1..N, each segment's
    tokens contiguous, 0 = padding): per row, each segment's length (B, N) and first token
    (B, N + 1), -1 for ids with no tokens (jax's cuDNN module drops those entries). Room for N
    segments per row, the most N tokens can hold, so no count has to be known when tracing;
    both are scatters over the N tokens, O(B·N)."""
    b, n = segment_ids.shape
    rows = jnp.arange(b, dtype=jnp.int32)[:, None]
    positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    counts = jnp.zeros((b, n + 1), jnp.int32).at[rows, segment_ids].add(1)[:, 1:]  # ids 1..N
    starts = jnp.full((b, n + 1), n, jnp.int32).at[rows, segment_ids].min(positions)[:, 1:]
    present = counts > 0
    lengths = jnp.where(present, counts, -1)
    offsets = jnp.pad(jnp.where(present, starts, -1), ((0, 0), (0, 1)), constant_values=-1)
    return lengths, offsets


def _plain_kernel(num_keys: int) -> str:
    """``auto``'s choice among the plain-JAX kernels."""
    return "chunked" if num_keys >= AUTO_CHUNK_MIN_TOKENS else "standard"


def attend(q: Array, k: Array, v: Array, implementation: str, *,
           query_chunk: int = QUERY_CHUNK, key_chunk: int = KEY_CHUNK,
           segment_ids: Segments | None = None) -> Array:
    """Attention output only, through the kernel named by ``implementation``; q, k, v and the
    output are (B, H, N, hd). ``segment_ids`` (``standard_attention``'s): packed sequences
    (every kernel keeps attention inside a segment; ``auto`` then picks a plain-JAX kernel)."""
    if implementation == "auto":
        implementation = choose_kernel(jax.default_backend(), q.dtype, q.shape[-1], k.shape[2],
                                       q.shape[2], segmented=segment_ids is not None)
        if implementation == "cudnn":
            try:
                return cudnn_attention(q, k, v)  # even counts here: nothing is padded
            except (ValueError, NotImplementedError, RuntimeError, TypeError):
                # an unsupported cuDNN version or shape: the plain-JAX choice
                implementation = _plain_kernel(k.shape[2])
    if implementation == "cudnn":
        if isinstance(segment_ids, tuple):
            raise ValueError("attention='cudnn' takes segment ids for packed self-attention "
                             "only; packed cross-attention runs 'standard' or 'chunked'")
        return cudnn_attention(q, k, v, segment_ids)
    if implementation == "xla":
        mask = None if segment_ids is None else _same_segment(*_query_key_segments(segment_ids))
        return _bnhd(jax.nn.dot_product_attention(_bnhd(q), _bnhd(k), _bnhd(v), mask=mask,
                                                  implementation="xla"))
    if implementation == "chunked":
        return chunked_attention(q, k, v, query_chunk=query_chunk, key_chunk=key_chunk,
                                 segment_ids=segment_ids)
    return standard_attention(q, k, v, segment_ids=segment_ids)[0]


class Attention(nnx.Module):
    """Multi-head (self- or cross-) attention.

    ``implementation`` picks the kernel (module docstring); ``query_chunk`` / ``key_chunk`` are
    the block sizes of ``chunked`` (and of ``auto`` when it chooses chunked). Returning the
    weights or attention dropout always runs ``standard``: both need the full N×N weights.
    """

    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs, qk_norm: bool = False,
                 implementation: str = "standard", attn_dropout: float = 0.0,
                 query_chunk: int = QUERY_CHUNK, key_chunk: int = KEY_CHUNK):
        if width % num_heads:
            raise ValueError(
                f"width {width} is not divisible by num_heads {num_heads}; "
                f"valid head counts for this width: "
                f"{[h for h in range(1, min(width, 64) + 1) if width % h == 0]}"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"unknown attention implementation {implementation!r}; valid: {IMPLEMENTATIONS}"
            )
        for name, chunk in (("query_chunk", query_chunk), ("key_chunk", key_chunk)):
            if not (isinstance(chunk, int) and chunk > 0):
                raise ValueError(f"attention {name} must be a positive int (tokens per block, "
                                 f"e.g. {QUERY_CHUNK}), got {chunk!r}")
        head_dim = width // num_heads
        init = nnx.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
        zeros = nnx.initializers.zeros_init()
        in_axes = ("embed", "heads", "head_dim")
        for name in ("query", "key", "value"):
            kernel = param(rngs, init, (width, num_heads, head_dim), in_axes)
            bias = param(rngs, zeros, (num_heads, head_dim), in_axes[1:])
            setattr(self, name, nnx.Dict(kernel=kernel, bias=bias))
        out_init = nnx.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)
        self.out = nnx.Dict(
            kernel=param(rngs, out_init, (num_heads, head_dim, width),
                         ("heads", "head_dim", "embed")),
            bias=param(rngs, zeros, (width,), ("embed",)),
        )
        self.q_norm = LayerNorm(head_dim, rngs=rngs, axis_name="head_dim") if qk_norm else None
        self.k_norm = LayerNorm(head_dim, rngs=rngs, axis_name="head_dim") if qk_norm else None
        self.implementation = implementation
        self.query_chunk, self.key_chunk = query_chunk, key_chunk
        self.attn_dropout = attn_dropout

    def _project(self, x: Array, proj) -> Array:
        """(B, N, D) -> (B, H, N, hd): heads-major, so the attention matmuls are plain batched
        matmuls with no transposes (measured faster than (B, N, H, hd) on CPU)."""
        return contract("bnd,dhk->bhnk", x, proj["kernel"][...]) + proj["bias"][...].astype(
            x.dtype)[:, None, :]

    def _project_qkv(self, x: Array,
                     input_norm: LayerNorm | None = None) -> tuple[Array, Array, Array]:
        """Self-attention's q, k, v from ONE (B·N, D) x (D, 3·H·hd) matmul, each (B, H, N, hd).

        The parameters stay three separate kernels (checkpoints and sharding rules see the
        same names); they are concatenated per call, a negligible copy next to the matmul,
        which runs faster as one than as three. ``input_norm`` is applied to ``x`` first, its
        affine folded into the concatenated weights (``LayerNorm.feeding``).
        """
        b, n, d = x.shape
        projs = (self.query, self.key, self.value)
        h, hd = projs[0]["kernel"].shape[1:]
        kernel = jnp.concatenate([p["kernel"][...].reshape(d, h * hd) for p in projs], axis=1)
        bias = jnp.concatenate([p["bias"][...].reshape(h * hd) for p in projs])
        if input_norm is not None:
            x, kernel, bias = input_norm.feeding(x, kernel, bias)
        qkv = jnp.transpose(linear(x, kernel, bias).reshape(b, n, 3, h, hd), (2, 0, 3, 1, 4))
        return qkv[0], qkv[1], qkv[2]

    def __call__(self, x: Array, context: Array | None = None, *, key: Array | None = None,
                 return_weights: bool = False, input_norm: LayerNorm | None = None,
                 segment_ids: Segments | None = None) -> tuple[Array, Array | None]:
        """Attention of ``x`` (queries) over ``context`` (keys and values; ``x`` itself if None).
        ``input_norm`` normalises ``x`` first (the pre-LN block's norm; self-attention only);
        ``segment_ids`` keep attention inside each packed image: (B, N) for self-attention, a
        (query ids, key ids) pair for cross-attention."""
        if input_norm is not None and context is not None:
            raise ValueError("input_norm is for self-attention; normalise x and context "
                             "before cross-attention")
        if segment_ids is not None and (context is not None) != isinstance(segment_ids, tuple):
            raise ValueError("segment_ids: one (B, N) array for self-attention, a (query ids, "
                             "key ids) pair for cross-attention")
        if context is None:
            q, k, v = self._project_qkv(x, input_norm)
        else:
            x = x if input_norm is None else input_norm(x)
            context = x if context is None else context
            q = self._project(x, self.query)
            k = self._project(context, self.key)
            v = self._project(context, self.value)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        weights = None
        if return_weights or (key is not None and self.attn_dropout > 0):
            y, weights = standard_attention(q, k, v, return_weights=True, segment_ids=segment_ids)
            if key is not None and self.attn_dropout > 0:
                weights_dropped = dropout(weights, self.attn_dropout, key)
                y = jnp.einsum("bhqk,bhkd->bhqd", weights_dropped, v)
        else:
            y = attend(q, k, v, self.implementation, query_chunk=self.query_chunk,
                       key_chunk=self.key_chunk, segment_ids=segment_ids)
        return contract("bhnk,hkd->bnd", y, self.out["kernel"][...], self.out["bias"][...]), weights
