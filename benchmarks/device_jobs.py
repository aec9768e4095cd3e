"""The measuring side of ``benchmarks/device_check.py``: one job per process, JSON on stdout.

  python -m benchmarks.device_jobs '{"kind": "speed", "variant": "B/16", "batch": 256}'

One process per job, because ``device.memory_stats()["peak_bytes_in_use"]`` only ever grows
within a process: a variant's measured peak must not include the previous variant's buffers.
Progress goes to stderr; the last stdout line is the JSON result.

Jobs:
- ``env``: backend, devices, versions, the compute dtype ``auto`` resolves to.
- ``peak``: the bf16 and f32 matmul rates of an n×n×n product (the MFU denominator).
- ``speed``: the default path's train step (AdamW, donated state) and inference of one
  variant: images/s, compile seconds, FLOPs (XLA's cost analysis and the analytic count),
  XLA's memory estimate, the measured peak device memory, and which attention kernel the
  compiled step contains.
- ``plan``: ``vit_jax.plan``'s predicted per-device peak for the same step (compiled on the
  CPU, as a user plans before a job).
- ``flags``: the train step with candidate XLA options against the default, in ABBA pairs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from benchmarks import jax_measure
from benchmarks.jax_measure import _build, _compile_forward, _compile_train
from benchmarks.timing import timed


def log(msg: str) -> None:
    print(f"[device_jobs] {msg}", file=sys.stderr, flush=True)


def flops_of(compiled) -> float | None:
    """XLA's FLOP count, or None where the backend's cost analysis fails."""
    try:
        return jax_measure.flops_of(compiled)
    except Exception as e:  # noqa: BLE001 (a missing figure must not lose the others)
        log(f"no cost analysis: {type(e).__name__}: {e}")
        return None


def memory_of(compiled) -> dict | None:
    try:
        return jax_measure.memory_of(compiled)
    except Exception as e:  # noqa: BLE001
        log(f"no memory analysis: {type(e).__name__}: {e}")
        return None


def job_env() -> dict[str, Any]:
    import importlib.metadata

    import jax
    import jax.numpy as jnp

    from vit_jax.models.vit import compute_dtype

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "grain",
                 "tensorflow-datasets", "torch", "timm"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": device.device_kind,
            "device_count": jax.device_count(), "versions": versions,
            "auto_dtype": jnp.dtype(compute_dtype("auto")).name}


def job_peak(n: int = 8192, repeats: int = 20, warmup_s: float = 2.0) -> dict[str, Any]:
    """Median TFLOP/s of an n×n×n matmul in bf16 and in f32 (JAX's default precision), on
    random data (zeros run faster on some GPUs), after ``warmup_s`` of the same products: an
    idle GPU's clock takes a moment to rise (3 warm-up products measured 584 TFLOP/s on an
    H200 that PyTorch measures at 770-800 warm)."""
    import jax
    import jax.numpy as jnp

    out = {"n": n}
    for dtype in ("bfloat16", "float32"):
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        dot = jax.jit(jnp.dot).lower(a, b).compile()
        t_end = time.perf_counter() + warmup_s
        while time.perf_counter() < t_end:
            dot(a, b).block_until_ready()
        wall, _ = timed(lambda dot=dot, a=a, b=b: dot(a, b).block_until_ready(), repeats,
                        warmup=0)
        out[dtype] = 2 * n**3 / statistics.median(wall) / 1e12
        log(f"{dtype} matmul {n}: {out[dtype]:.1f} TFLOP/s")
    return out


def attention_kernel_in(compiled) -> str:
    """Which attention ran, read off the compiled program: cuDNN's fused kernel is a custom
    call; the chunked kernel a loop over blocks; else XLA's softmax attention."""
    text = compiled.as_text()
    if "__cudnn$fmha" in text or "cudnn$fmha" in text:
        return "cudnn"
    return "chunked-or-standard"


def job_speed(variant: str, batch: int, image_size: int = 224, overrides: dict | None = None,
              repeats: int = 10, forward: bool = True) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vit_jax.models import count_params
    from vit_jax.plan import analytic_flops

    overrides = dict(overrides or {})
    model, graphdef, state, data = _build(variant, batch=batch, image_size=image_size,
                                          overrides=overrides, abstract=False)
    out: dict[str, Any] = {"variant": variant, "batch": batch, "image_size": image_size,
                           "overrides": overrides, "params": count_params(model),
                           "dtype": jnp.dtype(model.dtype).name,
                           "analytic_flops": analytic_flops(model, batch)["total"]}
    # Compiled first (compiling holds no buffers); run after the train step on the trained
    # parameters, so no second copy of them inflates the train step's measured peak.
    fwd = _compile_forward(model, data["image"]) if forward else None
    compiled, rng, compile_times = _compile_train(graphdef, state, data)
    holder = {"state": state}
    del model, state

    def step():
        holder["state"], metrics = compiled(holder["state"], data, rng)
        jax.block_until_ready((holder["state"], metrics))

    wall, cpu = timed(step, repeats, warmup=2)
    step_s = statistics.median(wall)
    stats = jax.devices()[0].memory_stats() or {}
    out["train"] = {**compile_times, "step_s": step_s, "all_s": wall, "img_s": batch / step_s,
                    "xla_flops": flops_of(compiled), "xla_memory": memory_of(compiled),
                    "measured_peak_bytes": stats.get("peak_bytes_in_use"),
                    "attention": attention_kernel_in(compiled)}
    log(f"{variant} {overrides} train {batch / step_s:.1f} img/s "
        f"(compile {compile_times['total_s']:.1f} s)")
    if fwd is not None:
        fwd, _, fwd_compile_s = fwd
        fstate = nnx.split(nnx.merge(graphdef, holder["state"])[0])[1]
        wall, _ = timed(lambda: fwd(fstate, data["image"]).block_until_ready(), repeats,
                        warmup=2)
        out["forward"] = {"compile_s": fwd_compile_s, "step_s": statistics.median(wall),
                          "img_s": batch / statistics.median(wall), "xla_flops": flops_of(fwd)}
        log(f"{variant} forward {out['forward']['img_s']:.1f} img/s")
    return out


def job_plan(variants: list[list], image_size: int = 224, dtype: str = "float32",
             overrides: dict | None = None, backend: str = "cpu") -> dict[str, Any]:
    """The planner's per-device peak for each ``[variant, batch]`` at ``dtype`` (the dtype
    ``auto`` resolves to on the measured device), as ``python -m vit_jax.plan --backend``
    computes it."""
    from vit_jax import plan

    out = {}
    for variant, batch in variants:
        config = plan.variant_config(variant, image_size, dtype=dtype, **(overrides or {}))
        r = plan.plan(config, {"data": 1}, batch=batch, num_classes=1000, search=False,
                      flops=False, auto_scan=False, backend=backend)
        out[variant] = {"batch": batch, "predicted_peak_bytes": r["base"]["peak_bytes"],
                        "plan_seconds": r["plan_seconds"]}
        log(f"plan {variant} on {backend}: {r['base']['peak_bytes'] / 2**30:.2f} GiB")
    return {"backend": backend, "dtype": dtype, "variants": out}


def job_flags(variant: str, batch: int, flags: dict[str, dict], image_size: int = 224,
              overrides: dict | None = None, repeats: int = 5) -> dict[str, Any]:
    """The train step compiled with each set of per-jit XLA options against the default,
    timed in ABBA pairs (``jax_measure.job_compare``): ratio > 1 means the flags are faster."""
    base = {"forward": False, "overrides": dict(overrides or {})}
    configs = [{"label": "default", **base},
               *({"label": label, "options": opts, **base} for label, opts in flags.items())]
    r = jax_measure.job_compare(variant, batch, image_size, configs, repeats)
    return {"variant": variant, "batch": batch,
            "flags": {label: {"options": c.get("options"), "error": c.get("error"),
                              "ratio": (c.get("train") or {}).get("ratio"),
                              "step_s": (c.get("train") or {}).get("step_s")}
                      for label, c in r["configs"].items()}}


JOBS = {"env": job_env, "peak": job_peak, "speed": job_speed, "plan": job_plan,
        "flags": job_flags}


def main() -> None:
    from vit_jax.runtime import configure_runtime

    configure_runtime()
    spec = json.loads(sys.argv[1])
    kind = spec.pop("kind")
    t0 = time.perf_counter()
    result = JOBS[kind](**spec)
    print(json.dumps({"kind": kind, "wall_s": time.perf_counter() - t0, **result}), flush=True)


if __name__ == "__main__":
    main()
