"""Will it fit? Per-device memory and FLOPs of the real train step, compiled without parameters.

  python -m vit_jax.plan --config=configs/quickstart.py --mesh=fsdp=8 --batch=256
  python -m vit_jax.plan --variant=H/14 --mesh=fsdp=64 --batch=1024 --device_memory=80GiB
  python -m vit_jax.plan --config=configs/NAME.py --variant=g/14 --mesh=fsdp=8,tensor=2
      --device_memory=80GiB --config.model.pool=map [--image_size=384] [--json]

The train step the trainer runs (``make_train_step`` jitted by ``sharding.jit_train_step``) is
lowered and compiled ahead of time for the mesh (fake CPU devices unless ``--backend`` names the
machine's accelerator), from abstract inputs only:
the state comes from ``nnx.eval_shape`` and its shardings from ``param_partition_specs``, so a
g/14 on 64 devices plans on a laptop. What is reported, per device:

- parameters / optimizer state: the shard of each array the device holds (exact, from the
  sharded abstract shapes);
- XLA's ``memory_analysis()`` of the SPMD-partitioned program (per-device numbers: checked in
  tests/test_plan.py by comparing fsdp=8 with fsdp=1):
  ``argument`` = the step's inputs (state + batch shard), ``output`` = new state + metrics,
  ``alias`` = outputs written into donated input buffers (the state: counted in both argument
  and output, so subtracted once), ``temp`` = everything XLA allocates during the step:
  activations kept for the backward pass, gradients, all-gathered weights, optimizer
  temporaries. Peak memory is ``train_state.StepCost.peak_bytes`` (argument + output - alias
  + temp), the project's one definition; the generated code is listed apart.
- FLOPs: XLA's ``cost_analysis()``, which for a partitioned program also counts one device's
  share (x devices = the step's total; it counts a loop body once, see ``xla_flops``), next to
  the analytic estimate (``analytic_flops``). XLA:GPU leaves out the matmuls it hands to cuBLAS
  (most of them), so on a GPU the analytic count is the one to use.

If the step does not fit ``--device_memory``, cheaper-memory variants are compiled in the order of
their cost (rematerialisation first, then micro-batching) and the first that fits is suggested.

``--backend=gpu`` (or ``tpu``) compiles for the accelerator of the machine it runs on instead of
fake CPU devices: its compiler's buffer assignment is what the trainer gets. On one H200,
XLA:GPU's memory analysis of the default train step (what this reports there; the device check
took it from the plain jitted step) matched the measured peak, where the planner's XLA:CPU
figure for the same bf16 step was well above it (benchmarks/RESULTS_GPU.md): XLA:GPU fuses more
and keeps fewer intermediates. So on CPU the peak is a safe upper bound for a GPU, not an
estimate; plan on the accelerator when you have one (a mesh no larger than its devices).
``dtype=auto`` resolves for the compiling backend (float32 on CPU): pass
``--config.model.dtype=bfloat16`` when planning an accelerator's job on the CPU. Compiled memory
ignores the runtime's own reservations (GPU: CUDA context, XLA's preallocation fraction).
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
from flax import nnx

from vit_jax import sharding, train_state
from vit_jax.config import (
    FROM_VARIANT,
    base_config,
    build_model,
    model_config,
    model_patch_size,
    packed_model_fixes,
)
from vit_jax.models import CNNS, count_params
from vit_jax.sizes import as_pair

# Remat policies by how much they recompute (and, in the same order, how much they keep):
# "dots" keeps every matmul output (recomputes only elementwise ops), "dots_no_batch" also
# recomputes the batched attention matmuls, "full" re-runs each block's forward pass.
REMAT_ORDER: tuple[str, ...] = ("none", "dots", "dots_no_batch", "full")
AUTO_SCAN_DEPTH = 24  # from this depth, plan with scan=True: compile time stops growing
MAX_ACCUM = 64
UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
         "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
         "tib": 2**40}
GiB = 2**30


# ----------------------------------------------------------------------------- parsing


def parse_mesh(text: str) -> dict[str, int]:
    """``"fsdp=8,tensor=2"`` -> ``{"fsdp": 8, "tensor": 2}`` (axes of ``sharding.MESH_AXES``)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or name.strip() not in sharding.MESH_AXES:
            raise ValueError(f"bad mesh entry {part!r} in {text!r}; write e.g. 'fsdp=8,tensor=2' "
                             f"with axes from {list(sharding.MESH_AXES)}")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            raise ValueError(f"mesh size {value!r} of {name!r} is not an integer") from None
    return out


def parse_bytes(text: str | int | None) -> int | None:
    """``"80GiB"``, ``"16G"`` (decimal), ``"512MiB"`` or a plain number of bytes."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        raise ValueError(f"bad memory size {text!r}; write e.g. 80GiB, 16GB, 512MiB or bytes")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def variant_config(variant: str, image_size: int = 224, **model_changes) -> mlc.ConfigDict:
    """``base_config()`` with the model replaced by ``variant`` (the CLI's ``--variant``)."""
    c = base_config()
    c.model = model_config(variant, image_size=image_size, **model_changes)
    return c


def num_classes_of(config: mlc.ConfigDict) -> int:
    """Classes from the ``onehot(K)`` op of ``pp_train`` (no data read), else the dataset."""
    found = re.search(r"onehot\((\d+)", config.data.pp_train or "")
    if found:
        return int(found.group(1))
    from vit_jax import data

    try:
        return data.dataset_info(config.data).num_classes
    except Exception as e:  # noqa: BLE001 - any data problem: name the way around it
        raise ValueError(f"cannot tell the number of classes without reading the data ({e}); "
                         "pass --num_classes=K") from None


# ----------------------------------------------------------------------------- FLOPs


def analytic_flops(model: nnx.Module, batch: int, remat_policy: str = "none",
                   packing: Mapping[str, int] | None = None) -> dict:
    """Training FLOPs of one step (forward + backward) by counting matmuls.

    A matmul of an (n, din) activation with a (din, dout) weight costs 2·n·din·dout forward and
    twice that backward (input and weight gradients), so each weight costs 6 FLOPs per token it
    sees; attention adds QKᵀ and AV, 2·N²·D each forward, i.e. 12·N²·D per layer forward+backward:

        FLOPs/step ≈ B · [ 6·(N·P_enc + N_p·P_patch + P_head) + 12·L·N²·D ]

    with N tokens (patches N_p + class/register tokens), P_enc the encoder's matmul weights
    (L blocks of 4·D² + 2·D·M), P_patch = p²·C·D, P_head the head's (and MAP head's query-side)
    weights, which see one token per image; a MAP head's key/value weights see N tokens.
    Rematerialisation re-runs part of the encoder's forward pass in the backward pass:
    ``full`` adds 2·N·P_enc + 4·L·N²·D, ``dots_no_batch`` the attention matmuls 4·L·N²·D,
    ``dots`` only elementwise work (not counted). Elementwise ops (softmax, GELU, LayerNorm,
    AdamW) are left out: a few % of XLA's count at ViT widths, more for tiny test widths.
    ``packing``: ``batch`` sequences of N = ``seq_len`` patches, each pooled into
    ``max_images`` heads' inputs (the attention is computed over the whole sequence).
    """
    encoder = model.encoder
    width = model.patch_embed.kernel.shape[-1]
    patches = packing["seq_len"] if packing else math.prod(model.grid)
    tokens = patches + model.num_prefix
    seen = {"encoder": tokens, "patch_embed": patches}
    pooled = packing["max_images"] if packing else 1  # what the head sees per row
    per_image = 0
    matmul_params = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(
            nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable)):
        names = [str(getattr(k, "key", k)) for k in path]
        if names[-1] != "kernel":
            continue
        size = math.prod(leaf.get_value().shape)
        n = seen.get(names[0], pooled)
        if names[0] == "map_head" and ("key" in names or "value" in names):
            n = tokens
        matmul_params += size
        per_image += 6 * n * size
    attention = 12 * encoder.depth * tokens**2 * width
    if model.map_head is not None:
        attention += 12 * pooled * tokens * width
    enc_params = sum(math.prod(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(
        nnx.state(encoder, nnx.Param)) if str(getattr(p[-1], "key", p[-1])) == "kernel")
    recompute = {"none": 0, "dots": 0,
                 "dots_no_batch": 4 * encoder.depth * tokens**2 * width,
                 "full": 2 * tokens * enc_params + 4 * encoder.depth * tokens**2 * width}
    total = batch * (per_image + attention + recompute[remat_policy])
    return dict(total=total, matmul_params=matmul_params, tokens=tokens,
                attention_share=batch * attention / total,
                remat_recompute_share=batch * recompute[remat_policy] / total)


# ----------------------------------------------------------------------------- compiling


def _with(config: mlc.ConfigDict, **changes: Any) -> mlc.ConfigDict:
    """A copy of ``config`` with dotted-key changes (``model.depth=2``)."""
    c = copy.deepcopy(config)
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[last] = value
    return c


BACKENDS = ("cpu", "gpu", "tpu")


def _available(backend: str) -> list:
    """The devices of ``backend`` (one line naming the fix when JAX has none here)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    try:
        return jax.devices(backend)
    except RuntimeError:
        raise ValueError(f"--backend={backend}: JAX finds no {backend} here; plan with "
                         "--backend=cpu, or on a machine with the accelerator") from None


def _devices(n: int, backend: str = "cpu") -> list:
    devices = _available(backend)
    if backend != "cpu" and len(devices) < n:
        raise ValueError(f"the mesh needs {n} devices but this machine has {len(devices)} "
                         f"{backend} devices; plan a larger mesh with --backend=cpu")
    if len(devices) < n:
        raise ValueError(
            f"the mesh needs {n} devices but jax has {len(devices)} CPU devices; set "
            f"JAX_NUM_CPU_DEVICES={n} (or jax.config.update('jax_num_cpu_devices', {n})) before "
            "jax starts its backend, or run `python -m vit_jax.plan`, which does")
    return devices[:n]


def _state_bytes(abstract_state: Any, shardings: Any) -> dict[str, int]:
    """Per-device bytes of params / optimizer / other state from the sharded abstract shapes."""
    sharded = jax.tree.map(
        lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
        abstract_state, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))
    report = sharding.per_device_bytes(sharded)
    return {kind: report[kind]["per_device"] for kind in report} | {
        f"{kind}_total": report[kind]["total"] for kind in report}


def compile_step(config: mlc.ConfigDict, mesh: jax.sharding.Mesh, batch: int,
                 num_classes: int) -> dict:
    """Lowers and compiles the train step for ``mesh``; returns its per-device memory and FLOPs.

    Nothing is allocated: state and batch are ``ShapeDtypeStruct``s and the shardings are the
    trainer's (``param_partition_specs``, ``batch_sharding``, donated state).
    """
    t0 = time.perf_counter()
    step = train_state.lower_train_step(
        config, num_classes, mesh, batch,
        (*model_image_size(config), config.model.get("in_channels", 3)), packing_of(config))
    t1 = time.perf_counter()
    # On XLA:CPU the executable never runs: LLVM optimisation only costs time (-40 % compile CPU
    # time; the buffer assignment and cost analysis come from the HLO passes and are identical).
    # An accelerator compiles exactly the trainer's program.
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    compiled = step.lowered.compile(
        compiler_options={"xla_backend_optimization_level": 0} if on_cpu else None)
    t2 = time.perf_counter()
    cost = train_state.step_cost(compiled)
    xla = dict(argument=cost.argument_bytes, output=cost.output_bytes, alias=cost.alias_bytes,
               temp=cost.temp_bytes, code=cost.code_bytes)
    state = _state_bytes(step.abstract_state, step.shardings)
    devices = math.prod(mesh.shape.values())
    return dict(
        remat_policy=config.model.get("remat_policy", "none"),
        grad_accum_steps=config.optim.grad_accum_steps,
        scan=bool(config.model.get("scan", False)),
        params_bytes=state["params"], opt_state_bytes=state["optimizer"],
        other_state_bytes=state["other"],
        params_bytes_total=state["params_total"], opt_state_bytes_total=state["optimizer_total"],
        batch_bytes=sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                        for x in step.inputs.values()),
        xla=xla,
        peak_bytes=cost.peak_bytes,
        xla_flops_per_device=cost.flops,
        xla_flops_total=cost.flops * devices,
        lower_seconds=t1 - t0, compile_seconds=t2 - t1)


def packing_of(config: mlc.ConfigDict) -> dict | None:
    """``data.packing`` (a step of packed sequences) or None."""
    packing = config.get("data", {}).get("packing")
    return dict(packing) if packing else None


def model_image_size(config: mlc.ConfigDict) -> tuple[int, int]:
    return as_pair(config.model.get("image_size", 224), "config.model.image_size")


def xla_flops(config: mlc.ConfigDict, mesh, batch: int, num_classes: int,
              measured: dict | None = None) -> tuple[float, str]:
    """XLA's FLOPs of the whole step (all devices), and how they were obtained.

    ``cost_analysis`` counts a while loop's body once, so a scanned encoder (or micro-batch
    scan) is under-counted by ~depth×. Then two unrolled, unaccumulated probes at depth 1 and 2
    are compiled instead and extrapolated linearly: F(L) = F(1) + (L-1)·(F(2) - F(1)).
    ``measured`` is the step's own compile, used directly when it has no such loop (None:
    always probe).
    """
    scanned = bool(config.model.get("scan", False))
    if measured is not None and not scanned and config.optim.grad_accum_steps == 1:
        return measured["xla_flops_total"], "direct"
    depth = _depth(config)
    probe = _with(config, **{"model.scan": False, "optim.grad_accum_steps": 1})
    f1, f2 = (compile_step(_with(probe, **{"model.depth": d}), mesh, batch,
                           num_classes)["xla_flops_total"] for d in (1, 2))
    return f1 + (depth - 1) * (f2 - f1), "extrapolated from unrolled depth-1 and depth-2 probes"


def _depth(config: mlc.ConfigDict) -> int:
    from vit_jax.models import parse_variant

    return config.model.get("depth") or parse_variant(config.model.variant)["depth"]


# ----------------------------------------------------------------------------- search


def candidates(remat_policy: str, grad_accum_steps: int, per_device_batch: int,
               policies: tuple[str, ...] = REMAT_ORDER) -> list[tuple[int, list[str]]]:
    """Cheaper-memory variants of (remat, accum) as ``[(accum, [policies...]), ...]``.

    Preference (what a suggestion costs in step time): rematerialisation before
    micro-batching, since on accelerators k micro-batches run k smaller, less efficient passes
    and repeat FSDP's weight all-gathers k times, while "dots" recomputes almost nothing and
    even "full" adds ~1/3 of the FLOPs. Within an accumulation level the policies go from
    least to most recompute (= from most to least memory). The configured (remat, accum) is
    left out; accum levels double while the per-device micro-batch stays whole.
    """
    start = policies.index(remat_policy) if remat_policy in policies else 0
    levels = []
    accum = grad_accum_steps
    examples = per_device_batch * grad_accum_steps
    while accum <= min(MAX_ACCUM, examples):
        if examples % accum == 0:
            names = [p for p in policies[start:] if (p, accum) != (remat_policy, grad_accum_steps)]
            if names:
                levels.append((accum, names))
        accum *= 2
    return levels


def plan(config: mlc.ConfigDict, mesh_cfg: Mapping[str, int], batch: int | None = None,
         device_memory: int | str | None = None, *, num_classes: int | None = None,
         auto_scan: bool = True, search: bool = True, flops: bool = True,
         backend: str = "cpu") -> dict:
    """Plans ``config``'s train step on ``mesh_cfg``: per-device memory, FLOPs, fits, suggestion.

    ``batch`` defaults to ``config.batch_size``; ``device_memory`` (bytes or "80GiB") turns on
    the fits check and, with ``search``, the search for a remat policy / micro-batching that
    fits. Needs ``prod(mesh)`` CPU devices (``JAX_NUM_CPU_DEVICES``); returns a JSON-able dict.
    """
    t_start = time.perf_counter()
    budget = parse_bytes(device_memory)
    batch = int(batch or config.batch_size)
    given = dict(mesh_cfg.items()) if hasattr(mesh_cfg, "items") else dict(mesh_cfg)
    fixed = math.prod(v for v in given.values() if v > 0)
    sizes = sharding.mesh_shape(given, len(_available(backend)) if -1 in given.values()
                                else fixed)
    n_devices = math.prod(sizes.values())
    mesh = sharding.make_mesh(sizes, _devices(n_devices, backend))
    batch_devices = sizes["data"] * sizes["fsdp"]
    if batch % batch_devices:
        raise ValueError(f"batch {batch} is not divisible by data*fsdp={batch_devices}; use a "
                         f"multiple of {batch_devices}")
    if config.model.variant in CNNS:
        raise ValueError(f"the planner handles ViT variants, not {config.model.variant!r}")
    num_classes = num_classes or num_classes_of(config)
    notes = []
    depth = _depth(config)
    if auto_scan and "scan" in config.model and not config.model.scan and \
            depth >= AUTO_SCAN_DEPTH:
        config = _with(config, **{"model.scan": True})
        notes.append(f"scan=True set automatically (depth {depth} >= {AUTO_SCAN_DEPTH}) so compile "
                     "time does not grow with depth; the loop form (scan=False) needs about as "
                     "much memory (B/16: scan +5% temp)")
    model = nnx.eval_shape(lambda: build_model(config, num_classes))
    fixes = packed_model_fixes(model) if packing_of(config) else []
    if fixes:
        raise ValueError(f"packed sequences need a ViT pooling each image: set {' '.join(fixes)}")

    base = compile_step(config, mesh, batch, num_classes)
    base["fits"] = None if budget is None else base["peak_bytes"] <= budget
    tried, suggestion = [], None
    per_device_batch = batch // batch_devices // config.optim.grad_accum_steps
    state_bytes = base["xla"]["argument"] - base["batch_bytes"]
    if budget is not None and not base["fits"] and search:
        if state_bytes > budget:
            need = math.ceil(n_devices * state_bytes / budget)
            notes.append(f"the state alone ({state_bytes / GiB:.1f} GiB/device) exceeds the "
                         f"budget: no remat or micro-batching can help; shard it over more "
                         f"devices (fsdp >= ~{need}) or use fewer/lower-precision moments")
        else:
            suggestion = _search(config, mesh, batch, num_classes, budget, base, tried,
                                 per_device_batch)
            if suggestion is None:
                notes.append("nothing tried fits; use more devices (larger fsdp) or a smaller "
                             "per-device batch")

    result = dict(
        variant=config.model.variant, params=count_params(model),
        image_size=list(model_image_size(config)), num_classes=num_classes,
        tokens=(packing_of(config) or {}).get("seq_len") or math.prod(model.grid) +
        model.num_prefix, packing=packing_of(config),
        depth=depth, scan=bool(config.model.get("scan", False)),
        dtype=jnp.dtype(model.dtype).name if hasattr(model, "dtype") else "float32",
        backend=backend, mesh=sizes, devices=n_devices, batch=batch,
        per_device_batch=batch // batch_devices,
        device_memory=budget, fits=base["fits"], base=base, tried=tried, suggestion=suggestion,
        notes=notes)
    if flops:
        result["flops"] = _flops_report(config, mesh, batch, num_classes, base, model)
        if suggestion and suggestion["remat_policy"] != base["remat_policy"]:
            result["suggestion_flops"] = _flops_report(
                _with(config, **{"model.remat_policy": suggestion["remat_policy"]}), mesh, batch,
                num_classes, base, model, probe_only=True)
    result["plan_seconds"] = time.perf_counter() - t_start
    return result


def _search(config, mesh, batch, num_classes, budget, base, tried,
            per_device_batch) -> dict | None:
    """The cheapest candidate (``candidates`` order) that fits, compiling as few as possible.

    Memory falls with stronger remat, so each accumulation level is first compiled with its
    strongest policy: if that does not fit, no policy of the level does and the level costs one
    compile; if it does, the cheaper policies are compiled in order and the first that fits
    wins. Before compiling, k micro-batches are assumed to divide the temporaries at best by k
    (weights, gradients and the accumulator do not shrink), a lower bound from the same policy
    at a smaller level that skips hopeless compiles.

    A remat candidate is planned with ``scan=True``: XLA:CPU's scheduler runs an unrolled
    loop's recomputations early, so its buffer assignment shows no saving from remat (measured:
    quickstart temp 206 MiB without, 230 MiB with full remat), while a scanned encoder
    recomputes inside the backward loop (53 MiB). Accelerator schedulers save with either form;
    scan + remat is also what big_vision and MaxText run.
    """
    remat = config.model.remat_policy
    measured = {(base["remat_policy"], base["grad_accum_steps"]): base}

    def attempt(policy: str, accum: int) -> dict | None:
        smaller = [k for (p, k) in measured if p == policy and k < accum]
        if smaller:
            prev = measured[(policy, max(smaller))]
            bound = prev["peak_bytes"] - prev["xla"]["temp"] * (1 - max(smaller) / accum)
            if bound > budget:
                tried.append(dict(remat_policy=policy, grad_accum_steps=accum, skipped=True,
                                  lower_bound_bytes=bound))
                return None
        changes = {"model.remat_policy": policy, "optim.grad_accum_steps": accum}
        if policy != "none" and "scan" in config.model:
            changes["model.scan"] = True
        result = compile_step(_with(config, **changes), mesh, batch, num_classes)
        result["fits"] = result["peak_bytes"] <= budget
        measured[(policy, accum)] = result
        tried.append(result)
        return result

    for accum, names in candidates(remat, config.optim.grad_accum_steps, per_device_batch):
        strongest = attempt(names[-1], accum)
        if strongest is None or not strongest["fits"]:
            continue
        for policy in names[:-1]:
            result = attempt(policy, accum)
            if result is not None and result["fits"]:
                return result
        return strongest
    return None


def _flops_report(config, mesh, batch, num_classes, base, model, probe_only=False) -> dict:
    """XLA's FLOPs of the step next to ``analytic_flops`` (same remat policy)."""
    t0 = time.perf_counter()
    total, method = xla_flops(config, mesh, batch, num_classes, None if probe_only else base)
    devices = math.prod(mesh.shape.values())
    analytic = analytic_flops(model, batch, config.model.remat_policy, packing_of(config))
    return dict(remat_policy=config.model.remat_policy, xla_total=total,
                xla_per_device=total / devices, xla_method=method,
                analytic_total=analytic["total"], analytic_over_xla=analytic["total"] / total,
                matmul_params=analytic["matmul_params"],
                attention_share=analytic["attention_share"], seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- output


def _size(x: float | None) -> str:
    """Binary units that stay readable from KiB test models to GiB ViT-g: 1.50G, 206.0M."""
    if x is None:
        return "-"
    for unit, scale in (("G", GiB), ("M", 2**20), ("K", 2**10)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}" if unit == "G" else f"{x / scale:.1f}{unit}"
    return f"{int(x)}B"


def _flop(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} "


def suggestion_flags(m: dict) -> str:
    """The config overrides that turn the planned config into measurement ``m``."""
    flags = [f"--config.model.remat_policy={m['remat_policy']}",
             f"--config.optim.grad_accum_steps={m['grad_accum_steps']}"]
    if m.get("scan"):
        flags.append("--config.model.scan=True")
    return " ".join(flags)


def format_plan(r: dict) -> str:
    """A readable report: header, one row per compiled variant, FLOPs, verdict."""
    mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
    budget = r["device_memory"]
    size = "x".join(map(str, r["image_size"]))
    if r.get("packing"):
        size = (f"packed sequences of {r['tokens']} patches (<= "
                f"{r['packing']['max_images']} images each)")
    else:
        size = f"{size}  {r['tokens']} tokens"
    lines = [f"{r['variant']}  {r['params'] / 1e6:.1f}M params  {size}  depth {r['depth']}  "
             f"dtype {r['dtype']}",
             f"mesh {mesh} ({r['devices']} {r['backend']} devices)  batch {r['batch']} "
             f"({r['per_device_batch']}/device)  device memory {_size(budget)}"]
    lines += [f"note: {n}" for n in r["notes"]]
    head = ("remat", "accum", "scan", "params", "opt", "batch", "args", "out", "alias", "temp",
            "peak", "fits", "code", "compile s")
    rows = [head]
    for m in [r["base"], *r["tried"]]:
        policy, accum = m["remat_policy"], str(m["grad_accum_steps"])
        if m.get("skipped"):
            rows.append((policy, accum, *[""] * 8, f">{_size(m['lower_bound_bytes'])}", "no",
                         "", "skipped"))
            continue
        x = m["xla"]
        rows.append((policy, accum, "yes" if m["scan"] else "no", _size(m["params_bytes"]),
                     _size(m["opt_state_bytes"]), _size(m["batch_bytes"]), _size(x["argument"]),
                     _size(x["output"]), _size(x["alias"]), _size(x["temp"]),
                     _size(m["peak_bytes"]), {None: "-", True: "yes", False: "no"}[m["fits"]],
                     _size(x["code"]), f"{m['lower_seconds'] + m['compile_seconds']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines.append("per device (peak = args + out - alias + temp; args = state + batch; "
                 "temp = activations, gradients, gathered weights; code = the compiled program, "
                 "not in peak):")
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
              for row in rows]
    for key, label in (("flops", "FLOPs/step"), ("suggestion_flops", "FLOPs/step, suggested")):
        f = r.get(key)
        if f:
            lines.append(
                f"{label} (remat {f['remat_policy']}): XLA {_flop(f['xla_total'])}FLOP = "
                f"{_flop(f['xla_per_device'])}FLOP/device x {r['devices']} [{f['xla_method']}]; "
                f"analytic {_flop(f['analytic_total'])}FLOP ({f['analytic_over_xla']:.2f}x XLA; "
                f"attention {f['attention_share']:.0%})")
    if budget is None:
        verdict = "no --device_memory given: nothing checked"
    elif r["fits"]:
        verdict = f"fits: peak {_size(r['base']['peak_bytes'])} <= {_size(budget)}"
    elif r["suggestion"]:
        s = r["suggestion"]
        verdict = (f"does not fit ({_size(r['base']['peak_bytes'])} > {_size(budget)}); "
                   f"suggestion: {suggestion_flags(s)} (peak {_size(s['peak_bytes'])})")
    else:
        verdict = f"does not fit ({_size(r['base']['peak_bytes'])} > {_size(budget)}); see notes"
    lines += [verdict, f"planned in {r['plan_seconds']:.1f} s"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def cli_config(config: mlc.ConfigDict | None, variant: str | None,
               image_size: int | None, seq_len: int | None = None,
               max_images: int | None = None) -> mlc.ConfigDict:
    """The config the CLI plans: a config file, ``--variant`` on it, or ``--variant`` alone.

    ``--variant`` on a config file swaps the ViT size and patch (width, depth, mlp_dim,
    num_heads, patch_size are reset to the variant's) and keeps the file's other model options
    (pool, posemb, dtype...); without a file it starts from ``base_config()`` at 224².
    ``seq_len`` / ``max_images``: plan a step of packed sequences (NaViT, ``data.packing``)
    of that many patches holding up to that many images (default: the config's packing, else
    8 images); the model must pool each image (no class token; ``--variant`` alone gets
    NaViT's MAP head).
    """
    if config is None and variant is None:
        raise ValueError("give --config=configs/NAME.py, --variant=H/14, or both")
    if config is None:
        config = variant_config(variant, image_size or 224)
        if seq_len or max_images:  # NaViT's head: attention pooling per image, no class token
            config.model.update(class_token=False, pool="map")
        return _packed(config, seq_len, max_images)
    config = copy.deepcopy(config)
    if variant is not None:
        config.model.variant = variant
        for key in FROM_VARIANT:
            config.model[key] = None
    if image_size is not None:
        config.model.image_size = image_size
    return _packed(config, seq_len, max_images)


def _packed(config: mlc.ConfigDict, seq_len: int | None, max_images: int | None
            ) -> mlc.ConfigDict:
    packing = dict(packing_of(config) or {})
    if seq_len is None and max_images is None:
        return config
    for name, value in (("seq_len", seq_len), ("max_images", max_images)):
        if value is not None and value < 1:
            raise ValueError(f"--{name}={value} must be a positive integer")
    packing["seq_len"] = seq_len or packing.get("seq_len")
    if packing["seq_len"] is None:
        raise ValueError("--max_images plans packed sequences: give --seq_len too")
    packing["max_images"] = max_images or packing.get("max_images") or 8
    packing["patch_size"] = model_patch_size(config)[0]
    with config.unlocked():
        config.data.packing = packing
    return config


def _cli() -> None:
    import json
    import sys

    from absl import flags
    from ml_collections import config_flags

    from vit_jax import cli

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Experiment config file; --config.x=y overrides work.", lock_config=True)
    variant = flags.DEFINE_string("variant", None, "ViT variant, e.g. H/14: alone (on "
                                  "base_config() at 224) or replacing the --config's variant.")
    image_size = flags.DEFINE_integer("image_size", None, "Image size (default: the config's; "
                                      "224 with --variant alone).")
    seq_len = flags.DEFINE_integer("seq_len", None, "Plan packed sequences (NaViT) of this "
                                   "many patches (default: the config's data.packing).")
    max_images = flags.DEFINE_integer("max_images", None, "Images per packed sequence "
                                      "(default: the config's data.packing, else 8).")
    classes = flags.DEFINE_integer("num_classes", None, "Classes (default: the config's "
                                   "onehot(K), else its data; 1000 with --variant alone).")
    mesh_flag = flags.DEFINE_string("mesh", None, "e.g. fsdp=8,tensor=1 (default: config.mesh).")
    batch = flags.DEFINE_integer("batch", None, "Global batch (default: config.batch_size).")
    memory = flags.DEFINE_string("device_memory", None, "e.g. 80GiB: check fit, suggest fixes.")
    auto_scan = flags.DEFINE_bool("auto_scan", True, f"scan=True for depth >= {AUTO_SCAN_DEPTH} "
                                  "unless --config.model.scan is given.")
    as_json = flags.DEFINE_bool("json", False, "Print the plan as JSON.")
    backend_flag = flags.DEFINE_enum(
        "backend", "cpu", list(BACKENDS), "Compile for this backend: cpu (fake devices, any "
        "mesh) or the accelerator this machine has (its compiler's own memory figures).")

    def main(argv: list[str]) -> None:
        try:
            config = cli_config(config_flag.value, variant.value, image_size.value,
                                seq_len.value, max_images.value)
            num_classes = classes.value or (1000 if config_flag.value is None else None)
            mesh_cfg = parse_mesh(mesh_flag.value) if mesh_flag.value else dict(config.mesh)
            if any(v == -1 for v in mesh_cfg.values()):
                raise ValueError(f"mesh {mesh_cfg} has a -1 axis; give every size, "
                                 "e.g. --mesh=fsdp=8,tensor=1")
            # Fake CPU devices: must be set before the backend starts (nothing touched it yet).
            if backend_flag.value == "cpu":
                jax.config.update("jax_platforms", "cpu")
            jax.config.update("jax_num_cpu_devices", math.prod(mesh_cfg.values()))
            explicit_scan = any(a.startswith("--config.model.scan") for a in sys.argv)
            result = plan(config, mesh_cfg, batch.value, memory.value, num_classes=num_classes,
                          auto_scan=auto_scan.value and not explicit_scan,
                          backend=backend_flag.value)
        except ValueError as e:
            cli.fail(str(e))
        print(json.dumps(result, indent=1) if as_json.value else format_plan(result))

    cli.run(main)


if __name__ == "__main__":
    _cli()
