"""Optimizer, learning-rate schedule and gradient accumulation, built from config.

One config dict describes the whole update rule, e.g.::

    dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.01,
         schedule="cosine", warmup_steps=500, total_steps=10_000, end_lr_factor=0.0,
         grad_clip_norm=1.0, grad_accum_steps=1)

`build_tx` turns it into one optax transformation (clip -> decay -> optimizer -> lr factors
-> weight average);
`build_schedule` is exposed separately so the train loop can log the learning rate;
`accumulate_gradients` is called by the train step when ``grad_accum_steps > 1``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vit_jax.checks import is_int, is_number
from vit_jax.ema import ema_transform
from vit_jax.tree import path_names

# Parameters whose path contains one of these names are never weight-decayed: they are
# embeddings/queries whose scale carries meaning (big_vision and timm exclude them too).
NO_DECAY_NAMES: tuple[str, ...] = ("pos_embedding", "pos_embedding_row", "pos_embedding_col",
                                   "cls_token", "reg_tokens", "probe")

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "rsqrt", "constant")

# Single source of truth for optimizer defaults; a config only states what it changes.
DEFAULTS: dict[str, Any] = dict(
    name="adamw",
    lr=1e-3,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    momentum=0.9,
    nesterov=False,
    schedule="cosine",
    warmup_steps=0,
    total_steps=None,
    end_lr_factor=0.0,
    timescale=10_000,  # rsqrt only: steps after warmup at which lr has dropped by 1/sqrt(2).
    cooldown_steps=0,  # linear ramp to 0 over the last steps (any schedule; big_vision style).
    grad_clip_norm=None,
    grad_accum_steps=1,  # read by the train step (accumulate_gradients), not by build_tx.
    mu_dtype=None,  # adamw's first moment: None = the parameters' (float32), or "bfloat16"
    layer_decay=None,  # fine-tuning: lr x layer_decay^(layers above), see lr_factors
    lr_mults=(),  # ((regex, multiplier), ...) on parameter names; the first full match wins
    ema_decay=None,  # an average of the weights kept beside them (vit_jax.ema), e.g. 0.9999
)
# Adam's first moment can be stored in bf16 at no measurable cost in quality (big_vision's
# ``mu_dtype``), saving a quarter of the optimizer state; the second moment stays float32.
MU_DTYPES = (None, "float32", "bfloat16")
# The type of each option whose default is None (None = "off" or "the run's length").
OPTIONAL_TYPES: dict[str, type] = dict(total_steps=int, grad_clip_norm=float, mu_dtype=str,
                                       layer_decay=float, ema_decay=float)

# Valid ranges of the numeric options: (low, high, brackets, what it means).
RANGES: dict[str, tuple[float, float, str, str]] = dict(
    lr=(0, math.inf, "[)", "the peak learning rate; 0 freezes the weights"),
    b1=(0, 1, "[)", "Adam's first-moment decay"),
    b2=(0, 1, "[)", "Adam's second-moment decay"),
    eps=(0, math.inf, "()", "Adam's epsilon"),
    weight_decay=(0, math.inf, "[)", "0 = off"),
    momentum=(0, 1, "[)", "SGD momentum, 0 = none"),
    warmup_steps=(0, math.inf, "[)", "steps"),
    total_steps=(1, math.inf, "[)", "steps"),
    end_lr_factor=(0, 1, "[]", "final lr as a fraction of lr"),
    timescale=(0, math.inf, "()", "steps"),
    cooldown_steps=(0, math.inf, "[)", "steps"),
    grad_clip_norm=(0, math.inf, "()", "None = no clipping"),
    grad_accum_steps=(1, math.inf, "[)", "micro-batches per step"),
    layer_decay=(0, 1, "(]", "None = off; e.g. 0.75 (BEiT/MAE fine-tuning)"),
    ema_decay=(0, 1, "()", "None = off; e.g. 0.9999, the weight of the old average per step"),
)
INTEGER_KEYS = ("warmup_steps", "total_steps", "cooldown_steps", "grad_accum_steps")


def resolve(cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Merges `cfg` over DEFAULTS; unknown keys are typos, so they raise."""
    given = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown optimizer config keys {unknown}; valid keys: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **given}
    _check_ranges(merged)
    _check_lr_mults(merged["lr_mults"])
    if merged["mu_dtype"] not in MU_DTYPES:
        raise ValueError(f"optim.mu_dtype={merged['mu_dtype']!r} must be one of {MU_DTYPES} "
                         "(adamw's first moment)")
    return merged


def _check_ranges(c: Mapping[str, Any]) -> None:
    """Every numeric option in its valid range, named with the range, before any work."""
    for key, (low, high, brackets, meaning) in RANGES.items():
        value = c[key]
        if value is None and key in OPTIONAL_TYPES:
            continue
        integer = key in INTEGER_KEYS
        ok = is_int(value) if integer else is_number(value)
        ok = ok and (value >= low if brackets[0] == "[" else value > low)
        ok = ok and (value <= high if brackets[1] == "]" else value < high)
        if not ok:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"optim.{key}={value!r} must be {kind} in {brackets[0]}{low}, "
                             f"{high}{brackets[1]} ({meaning})")


# ----------------------------------------------------------------------------- weight-decay mask


def _ndim(leaf: Any) -> int:
    if isinstance(leaf, nnx.Variable):
        leaf = leaf.get_value()
    return len(leaf.shape) if hasattr(leaf, "shape") else jnp.ndim(leaf)


def decay_mask(params: Any, no_decay_names: tuple[str, ...] = NO_DECAY_NAMES) -> Any:
    """True where weight decay applies: matrices/kernels, not biases, norms or embeddings.

    Works on an `nnx.State` of Params (mask leaves sit where the Variables are, a valid
    prefix tree for optax), on its pure-array form, and on `nnx.to_pure_dict` output.
    """

    def keep(path: tuple[Any, ...], leaf: Any) -> bool:
        names = set(path_names(path))
        return _ndim(leaf) >= 2 and not names.intersection(no_decay_names)

    return jax.tree_util.tree_map_with_path(
        keep, params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


# ----------------------------------------------------------------------------- per-parameter lr

# Parameters below the first block: layer 0 of the layer-wise decay (with the patch embedding).
EMBEDDING_NAMES = ("patch_embed", "cls_token", "reg_tokens", "posemb")


def _check_lr_mults(rules: Any) -> None:
    for rule in rules or ():
        ok = isinstance(rule, list | tuple) and len(rule) == 2 and isinstance(rule[0], str)
        if ok:
            try:
                re.compile(rule[0])
            except re.error:
                ok = False
        if not ok or not (is_number(rule[1]) and rule[1] >= 0):
            raise ValueError(f"optim.lr_mults: {rule!r} must be a (regex, multiplier >= 0) "
                             "pair, e.g. ('head/.*', 10.0)")


def _encoder_depth(named: list[tuple[tuple[str, ...], Any]]) -> int:
    """Blocks in the encoder: the stacked axis of a scanned one, else the block indices."""
    depth = 0
    for names, leaf in named:
        if names[:2] == ("encoder", "blocks"):
            if len(names) > 2 and names[2].isdigit():
                depth = max(depth, int(names[2]) + 1)
            else:  # scan: every block parameter is stacked along axis 0
                depth = max(depth, _shape(leaf)[0])
    return depth


def _shape(leaf: Any) -> tuple[int, ...]:
    if isinstance(leaf, nnx.Variable):
        leaf = leaf.get_value()
    return tuple(getattr(leaf, "shape", ()))


def lr_factors(tree: Any, layer_decay: float | None = None,
               lr_mults: Any = ()) -> Any:
    """The learning-rate multiplier of every parameter of ``tree`` (a float, or for a scanned
    encoder an array broadcasting over the stacked layer axis).

    Layer-wise decay (BEiT, MAE, timm's ``layer_decay``): with depth D, the patch embedding,
    class/register tokens and position table are layer 0, block i is layer i + 1, the rest (final
    norm, pooling, head) layer D + 1, and layer l gets ``layer_decay ** (D + 1 - l)``. ``lr_mults``
    (big_vision's): ``(regex, multiplier)`` rules on the "/"-joined name, the first that fully
    matches applies. Both multiply.
    """
    named = [(path_names(p), leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(
        tree, is_leaf=lambda x: isinstance(x, nnx.Variable))]
    depth = _encoder_depth(named) if layer_decay is not None else 0
    rules = [(re.compile(pattern), float(mult)) for pattern, mult in lr_mults or ()]

    def factor(path: tuple[Any, ...], leaf: Any) -> Any:
        names = path_names(path)
        value: Any = 1.0
        if layer_decay is not None:
            if names[0] in EMBEDDING_NAMES:
                value = layer_decay ** (depth + 1)
            elif names[:2] == ("encoder", "blocks") and len(names) > 2 and names[2].isdigit():
                value = layer_decay ** (depth - int(names[2]))
            elif names[:2] == ("encoder", "blocks"):  # scanned: one factor per stacked layer
                per_layer = layer_decay ** (depth - np.arange(depth, dtype=np.float64))
                value = per_layer.reshape((depth,) + (1,) * (len(_shape(leaf)) - 1))
        name = "/".join(names)
        for pattern, mult in rules:
            if pattern.fullmatch(name):
                value = value * mult
                break
        return value

    return jax.tree_util.tree_map_with_path(
        factor, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def scale_by_lr_factors(layer_decay: float | None,
                        lr_mults: Any) -> optax.GradientTransformation:
    """Multiplies each parameter's update by its ``lr_factors`` (last in the chain, so weight
    decay scales with it, as a per-group learning rate does in PyTorch/timm)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        factors = lr_factors(updates, layer_decay, lr_mults)
        scaled = jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors)
        return scaled, state

    return optax.GradientTransformation(init, update)


# ----------------------------------------------------------------------------- schedules


def build_schedule(cfg: Mapping[str, Any] | Any) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine/linear/rsqrt/constant (+ optional cooldown).

    Written as one jnp function of the step (as big_vision does) so that every schedule
    shares the same warmup and cooldown and the result can be evaluated under jit.
    """
    c = resolve(cfg)
    kind, base = c["schedule"], float(c["lr"])
    warmup, total = int(c["warmup_steps"]), c["total_steps"]
    end, cooldown, timescale = float(c["end_lr_factor"]), int(c["cooldown_steps"]), c["timescale"]
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown schedule {kind!r}; valid choices: {SCHEDULES}")
    if total is None and (kind in ("cosine", "linear") or cooldown):
        raise ValueError(f"schedule={kind!r} (or cooldown_steps) needs total_steps to be set")
    if total is not None and warmup + cooldown > int(total):
        raise ValueError(f"optim.warmup_steps + optim.cooldown_steps ({warmup}+{cooldown}) "
                         f"exceed the {total} training steps; lower --config.optim.warmup_steps")
    if end and kind not in ("cosine", "linear"):
        raise ValueError(f"end_lr_factor only applies to cosine/linear, not {kind!r}; set it to 0")
    if kind == "rsqrt" and not timescale > 0:
        raise ValueError(f"rsqrt schedule needs timescale > 0, got {timescale}")

    def schedule(step: jax.Array | int) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        if kind in ("cosine", "linear"):
            progress = jnp.clip((step - warmup) / max(int(total) - warmup, 1), 0.0, 1.0)
            if kind == "cosine":
                factor = end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
            else:
                factor = 1.0 - (1.0 - end) * progress
        elif kind == "rsqrt":
            factor = jnp.sqrt(timescale / (jnp.maximum(step - warmup, 0.0) + timescale))
        else:
            factor = jnp.ones_like(step)
        if warmup:
            factor = factor * jnp.minimum(1.0, step / warmup)
        if cooldown:
            factor = factor * jnp.clip((int(total) - step) / cooldown, 0.0, 1.0)
        return base * factor

    return schedule


# ----------------------------------------------------------------------------- transformation


def build_tx(cfg: Mapping[str, Any] | Any) -> optax.GradientTransformation:
    """The full update rule: global-norm clip -> (masked) weight decay -> adamw/sgd
    (-> per-parameter lr factors -> the weight average, when configured).

    AdamW decay follows optax/PyTorch (decoupled, scaled by the current lr); SGD decay is
    the classic coupled L2 term added to the gradient before momentum.
    `grad_accum_steps` is not handled here: see `accumulate_gradients`.
    """
    c = resolve(cfg)
    schedule = build_schedule(c)
    parts: list[optax.GradientTransformation] = []
    if c["grad_clip_norm"]:
        parts.append(optax.clip_by_global_norm(float(c["grad_clip_norm"])))
    wd = float(c["weight_decay"])
    if c["name"] == "adamw":
        parts.append(
            optax.adamw(
                schedule, b1=c["b1"], b2=c["b2"], eps=c["eps"], weight_decay=wd, mask=decay_mask,
                mu_dtype=c["mu_dtype"] and jnp.dtype(c["mu_dtype"]),
            )
        )
    elif c["name"] == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
        parts.append(optax.sgd(schedule, momentum=c["momentum"] or None, nesterov=c["nesterov"]))
    else:
        raise ValueError(f"Unknown optimizer {c['name']!r}; valid choices: {OPTIMIZERS}")
    if c["layer_decay"] is not None or c["lr_mults"]:
        parts.append(scale_by_lr_factors(c["layer_decay"], c["lr_mults"]))
    if c["ema_decay"] is not None:  # last: it averages the parameters after the final update
        parts.append(ema_transform(float(c["ema_decay"])))
    return optax.chain(*parts)


# ----------------------------------------------------------------------------- accumulation


def _split_micro(batch: Any, num_micro: int) -> Any:
    """(B, ...) -> (k, B/k, ...), taking every k-th example into the same micro-batch.

    The strided split keeps each micro-batch spread over all devices when the batch axis
    is sharded; a contiguous split would put micro-batch i on 1/k of the devices.
    """

    def split(x: jax.Array) -> jax.Array:
        if x.ndim == 0 or x.shape[0] % num_micro:
            raise ValueError(
                f"Batch leaf of shape {x.shape} cannot be split into grad_accum_steps="
                f"{num_micro} equal micro-batches; use a batch size divisible by {num_micro}"
            )
        return x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def accumulate_gradients(
    loss_and_grad_fn: Callable[[Any, Any], tuple[Any, Any]],
    params_or_model: Any,
    batch: Any,
    num_micro: int,
) -> tuple[Any, Any]:
    """Averages `loss_and_grad_fn(params_or_model, micro_batch)` over `num_micro` micro-batches.

    Trades compute time for memory: k micro-batches of B/k give the same (value, grads) as
    one batch of B when the loss is a mean over examples. Runs as a `lax.scan`, so only one
    micro-batch's activations are alive at a time. `value` may be a loss or `(loss, aux)`;
    every leaf is averaged, so aux should hold per-batch means. For an `nnx.Module`, state
    changed by the forward pass (e.g. dropout RNG counters) is threaded through the
    micro-batches and written back to the module.
    """
    if num_micro < 1:
        raise ValueError(f"num_micro must be >= 1, got {num_micro}")
    if num_micro == 1:
        return loss_and_grad_fn(params_or_model, batch)
    micro = _split_micro(batch, num_micro)

    is_module = isinstance(params_or_model, nnx.Module)
    if is_module:
        graphdef, state = nnx.split(params_or_model)

        def call(state: Any, mb: Any) -> tuple[Any, Any, Any]:
            model = nnx.merge(graphdef, state)
            out = loss_and_grad_fn(model, mb)
            return out, nnx.state(model)
    else:
        state = params_or_model

        def call(state: Any, mb: Any) -> tuple[Any, Any, Any]:
            return loss_and_grad_fn(state, mb), state

    first_mb = jax.tree.map(lambda x: x[0], micro)
    out_shape = jax.eval_shape(lambda s, mb: call(s, mb)[0], state, first_mb)
    # Accumulate in at least f32 so bf16 gradients do not lose the small micro-batch terms.
    acc_dtype = lambda s: jnp.promote_types(s.dtype, jnp.float32)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, acc_dtype(s)), out_shape)

    def body(carry: tuple[Any, Any], mb: Any) -> tuple[tuple[Any, Any], None]:
        acc, state = carry
        out, state = call(state, mb)
        acc = jax.tree.map(lambda a, o: a + o.astype(a.dtype), acc, out)
        return (acc, state), None

    (acc, state), _ = jax.lax.scan(body, (zeros, state), micro)
    value, grads = jax.tree.map(
        lambda a, s: (a / num_micro).astype(s.dtype), acc, out_shape
    )
    if is_module:
        nnx.update(params_or_model, state)
    return value, grads
