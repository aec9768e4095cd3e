"""The JAX side of ``benchmarks/throughput.py``: one process runs a list of jobs, prints JSON.

  python -m benchmarks.jax_measure '{"jobs": [{"kind": "peak"}, {"kind": "model", ...}]}'

Each set of XLA flags needs its own process (``XLA_FLAGS`` is read when the backend starts), so
the driver starts one of these per flag set; within a process every job shares the same flags,
so their ratios are comparable. ``configure_runtime()`` runs first, exactly as in
``vit_jax.main``: the numbers are what a user of the default runtime gets. Progress goes to
stderr; the last stdout line is the JSON result.

Job kinds:
- ``peak``: f32 ``jnp.dot`` of two n×n matrices, median GFLOP/s (the MFU denominator).
- ``model``: inference and train-step images/s, compile seconds, XLA cost-analysis FLOPs and
  memory-analysis bytes of the real ``make_train_step`` (AdamW, jitted with donation);
  ``forward_options`` also times inference compiled with other per-jit XLA options.
- ``compare``: several versions of one model (model options, per-jit XLA options, donation)
  each timed against the first (baseline) in ABBA pairs, for ratios that survive a busy machine.
- ``memory``: compile-only train-step memory for each remat policy.
- ``compile``: compile-only train-step time from abstract state (no parameter memory, so H/14
  is cheap to compile even where it would not fit).
- ``quickstart``: ``configs/quickstart.py``'s input pipeline images/s and train-step images/s.

``{"serve": {"variants": [...], "batch": 32}}`` instead of jobs makes this a duel worker
(``serve``): it times steps on command, alternating with timm's worker.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import serve_loop, timed

REPO = Path(__file__).resolve().parents[1]
ADAMW = dict(name="adamw", lr=1e-3, weight_decay=0.05, schedule="constant")


def log(msg: str) -> None:
    print(f"[jax_measure] {msg}", file=sys.stderr, flush=True)


def interleaved(fns: dict[str, Any], repeats: int) -> dict[str, tuple[list, list]]:
    """Times each callable ``repeats`` times in rounds (A B C, A B C, ...) after one warm-up
    call each, so a change in the machine's load during the run hits all of them alike."""
    for fn in fns.values():
        fn()
    times = {k: ([], []) for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            wall, cpu = timed(fn, 1, warmup=0)
            times[k][0].extend(wall)
            times[k][1].extend(cpu)
    return times


def summarize(batch: int, wall: list[float], cpu: list[float]) -> dict[str, Any]:
    step = statistics.median(wall)
    return {"step_s": step, "all_s": wall, "cpu_s": statistics.median(cpu),
            "img_s": batch / step}


def flops_of(compiled) -> float:
    from vit_jax.train_state import step_cost

    return step_cost(compiled).flops


def memory_of(compiled) -> dict[str, int]:
    """XLA's buffer assignment (``StepCost``): temp = activations and scratch; peak = what
    must fit."""
    from vit_jax.train_state import step_cost

    cost = step_cost(compiled)
    return {"temp": cost.temp_bytes, "argument": cost.argument_bytes, "peak": cost.peak_bytes}


# ----------------------------------------------------------------------------- jobs


def job_peak(n: int = 4096, repeats: int = 5) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot).lower(a, b).compile()
    times, _ = timed(lambda: dot(a, b).block_until_ready(), repeats)
    gflops = [2 * n**3 / t / 1e9 for t in times]
    return {"n": n, "gflops": statistics.median(gflops), "all": gflops}


def _build(variant: str, *, batch: int, image_size: int, overrides: dict, abstract: bool,
           num_classes: int = 1000):
    """(model, optimizer) as graphdef + state (concrete or abstract), and a batch."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from vit_jax import train_state
    from vit_jax.models import create_model

    create = train_state.state_factory(
        lambda: create_model(variant, num_classes=num_classes, image_size=image_size,
                             **overrides), ADAMW)

    model, optimizer = nnx.eval_shape(create) if abstract else create()
    graphdef, state = nnx.split((model, optimizer))
    rng_np = np.random.default_rng(0)
    labels = rng_np.integers(0, num_classes, batch)
    batch_arrays = {
        "image": jnp.asarray(rng_np.standard_normal((batch, image_size, image_size, 3)),
                             jnp.float32),
        "labels": jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float32),
    }
    if abstract:
        batch_arrays = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                    batch_arrays)
    return model, graphdef, state, batch_arrays


def _compile(lowered, options: dict | None):
    """``options``: per-computation XLA options (the ``XLA_FLAGS`` names without ``--``)."""
    return lowered.compile(compiler_options=options) if options else lowered.compile()


def _compile_train(graphdef, state, batch, *, donate: bool = True, options: dict | None = None):
    import jax

    from vit_jax.train_step import make_train_step

    rng = jax.random.PRNGKey(0)
    step = jax.jit(make_train_step(graphdef), donate_argnums=0 if donate else ())
    t0 = time.perf_counter()
    lowered = step.lower(state, batch, rng)
    t1 = time.perf_counter()
    compiled = _compile(lowered, options)
    t2 = time.perf_counter()
    return compiled, rng, {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}


def _compile_forward(model, images, options: dict | None = None):
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))
    t0 = time.perf_counter()
    compiled = _compile(fwd.lower(state, images), options)
    return compiled, state, time.perf_counter() - t0


def job_model(variant: str | None = None, batch: int = 32, image_size: int = 224,
              overrides: dict | None = None, forward: bool = True, train: bool = True,
              donate: bool = True, repeats: int = 3, config: str | None = None,
              num_classes: int = 1000, skip_if_default: bool = False,
              forward_options: dict[str, dict] | None = None) -> dict[str, Any]:
    """Inference and train step of one model; ``config`` (a file in ``configs/``) takes the
    model, image size, class count and batch size from that experiment config."""
    import jax

    from vit_jax.models import count_params, model_options

    overrides = dict(overrides or {})
    if config is not None:
        variant, image_size, cfg_overrides, num_classes, batch = _model_from_config(config)
        overrides = {**cfg_overrides, **overrides}
    defaults = model_options(variant)
    if skip_if_default and overrides and all(defaults.get(k) == v for k, v in overrides.items()):
        return {"variant": variant, "overrides": overrides, "skipped": "the model's default"}
    out: dict[str, Any] = {"variant": variant, "config": config, "batch": batch,
                           "image_size": image_size, "overrides": overrides, "donate": donate,
                           "defaults": {k: v for k, v in defaults.items()
                                        if isinstance(v, str | bool | int | float)}}
    model, graphdef, state, data = _build(variant, batch=batch, image_size=image_size,
                                          overrides=overrides, abstract=False,
                                          num_classes=num_classes)
    out["params"] = count_params(model)
    if forward:
        # The model's own forward, and the same with each of ``forward_options`` (per-jit XLA
        # options), timed in interleaved rounds.
        variants = {"default": None, **(forward_options or {})}
        compiled = {k: _compile_forward(model, data["image"], o) for k, o in variants.items()}
        mstate = compiled["default"][1]
        fns = {k: (lambda c=c: c(mstate, data["image"]).block_until_ready())
               for k, (c, _, _) in compiled.items()}
        times = interleaved(fns, repeats)
        out["forward"] = {"compile_s": compiled["default"][2],
                          "flops": flops_of(compiled["default"][0]),
                          **summarize(batch, *times["default"])}
        out["forward_with"] = {k: summarize(batch, *times[k]) for k in forward_options or {}}
        log(f"{variant} {overrides} forward {out['forward']['img_s']:.1f} img/s")
        del mstate, compiled, fns
    if train:
        compiled, rng, compile_times = _compile_train(graphdef, state, data, donate=donate)
        holder = {"state": state}
        del model, state

        def step():
            holder["state"], metrics = compiled(holder["state"], data, rng)
            jax.block_until_ready((holder["state"], metrics))

        step()  # warm-up, outside the page-fault count
        usage = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu = timed(step, repeats, warmup=0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        out["train"] = {**compile_times, "flops": flops_of(compiled), "memory": memory_of(compiled),
                        **summarize(batch, wall, cpu),
                        # pages the kernel had to map (and zero) per step, and its CPU time
                        "minor_faults": (after.ru_minflt - usage.ru_minflt) / repeats,
                        "system_s": (after.ru_stime - usage.ru_stime) / repeats,
                        "max_rss_mib": after.ru_maxrss / 1024}
        log(f"{variant} {overrides} train {out['train']['img_s']:.2f} img/s "
            f"(compile {compile_times['total_s']:.1f} s)")
    return out


def job_compare(variant: str, batch: int = 32, image_size: int = 224,
                configs: list[dict] | tuple = (), repeats: int = 3) -> dict[str, Any]:
    """Versions of one model's steps against the first config (the baseline), in pairs.

    Each config: ``label``, and optionally ``overrides`` (model options), ``options`` (per-jit
    XLA options), ``donate`` (default True),
    ``forward`` / ``train`` (default True), ``skip_if_default`` (skip when ``overrides`` are
    the model's defaults anyway). Each version is compiled, timed against the baseline in
    ABBA order (``repeats`` pairs; the ratio is the median of per-pair ratios) and freed
    before the next, so the process never holds more than two models: holding many slowed
    every step by up to 20% and blurred the ratios.
    """
    from vit_jax.models import model_options

    defaults = model_options(variant)
    out: dict[str, Any] = {"variant": variant, "batch": batch, "image_size": image_size,
                           "defaults": {k: v for k, v in defaults.items()
                                        if isinstance(v, str | bool | int | float)},
                           "configs": {}}
    base_fns: dict[str, Any] = {}
    for i, cfg in enumerate(configs):
        label, overrides = cfg["label"], dict(cfg.get("overrides") or {})
        options = cfg.get("options")
        entry = out["configs"][label] = {"overrides": overrides, "options": options}
        if cfg.get("skip_if_default") and overrides and all(
                defaults.get(k) == v for k, v in overrides.items()):
            entry["skipped"] = "the model's default"
            continue
        fns: dict[str, Any] = {}
        try:
            _compare_one(cfg, entry, fns, variant, batch, image_size, overrides, options)
        except Exception as e:  # noqa: BLE001 (an unsupported combination: report, go on)
            entry["error"] = f"{type(e).__name__}: {e}"
            log(f"{label} failed: {entry['error']}")
            continue
        if i == 0:
            base_fns = fns
            for key, fn in fns.items():
                entry[key.split("|")[1]].update(summarize(batch, *timed(fn, repeats)))
            log(f"baseline {label} timed")
            continue
        for key, fn in fns.items():
            kind = key.split("|")[1]
            base = base_fns.get(f"{configs[0]['label']}|{kind}")
            mine, theirs = paired(fn, base, repeats) if base else (timed(fn, repeats), None)
            entry[kind].update(summarize(batch, *mine))
            if theirs is not None:
                entry[kind]["ratio"] = statistics.median(
                    b / a for a, b in zip(mine[0], theirs[0], strict=True))
        log(f"{label} timed against the baseline")
        del fns  # frees this version's executables and buffers before the next
    return out


def paired(fn, base, pairs: int) -> tuple[tuple[list, list], tuple[list, list]]:
    """(wall, cpu) of ``fn`` and of ``base``, timed in ABBA order after a warm-up of each."""
    fn(), base()
    mine, theirs = ([], []), ([], [])
    for r in range(pairs):
        order = ((fn, mine), (base, theirs)) if r % 2 == 0 else ((base, theirs), (fn, mine))
        for f, acc in order:
            wall, cpu = timed(f, 1, warmup=0)
            acc[0].extend(wall)
            acc[1].extend(cpu)
    return mine, theirs


def _compare_one(cfg, entry, fns, variant, batch, image_size, overrides, options) -> None:
    """Builds and compiles one ``job_compare`` config, adding its timed steps to ``fns``."""
    import jax
    import jax.numpy as jnp

    label = cfg["label"]
    model, graphdef, state, data = _build(variant, batch=batch, image_size=image_size,
                                          overrides=overrides, abstract=False)
    if cfg.get("forward", True):
        compiled, mstate, compile_s = _compile_forward(model, data["image"], options)
        mstate = jax.tree.map(jnp.copy, mstate)  # the train step donates the original
        entry["forward"] = {"compile_s": compile_s, "flops": flops_of(compiled)}
        fns[f"{label}|forward"] = (
            lambda c=compiled, s=mstate, x=data["image"]: c(s, x).block_until_ready())
    if cfg.get("train", True):
        compiled, rng, times = _compile_train(graphdef, state, data, options=options,
                                              donate=cfg.get("donate", True))
        entry["train"] = {**times, "flops": flops_of(compiled),
                          "memory": memory_of(compiled)}
        holder = {"state": state}

        def step(c=compiled, h=holder, d=data, r=rng):
            h["state"], metrics = c(h["state"], d, r)
            jax.block_until_ready((h["state"], metrics))

        fns[f"{label}|train"] = step


def job_compile(variant: str, batch: int = 32, image_size: int = 224,
                overrides: dict | None = None) -> dict[str, Any]:
    """Train-step lower + compile seconds and memory from abstract state only."""
    _, graphdef, state, data = _build(variant, batch=batch, image_size=image_size,
                                      overrides=dict(overrides or {}), abstract=True)
    compiled, _, times = _compile_train(graphdef, state, data)
    log(f"{variant} {overrides} compile {times['total_s']:.1f} s")
    return {"variant": variant, "batch": batch, "image_size": image_size,
            "overrides": overrides or {}, **times, "flops": flops_of(compiled),
            "memory": memory_of(compiled)}


def job_memory(variant: str, batch: int = 32, image_size: int = 224,
               policies: tuple[str, ...] = ("none", "dots", "full"),
               overrides: dict | None = None) -> dict[str, Any]:
    out = {"variant": variant, "batch": batch, "policies": {}}
    for policy in policies:
        r = job_compile(variant, batch, image_size, {**(overrides or {}), "remat_policy": policy})
        out["policies"][policy] = r["memory"]
    return out


def _model_from_config(path: str):
    """(variant, image_size, other model options, num_classes, batch) of a config file."""
    from vit_jax import data
    from vit_jax.config import load_config_file, model_kwargs

    config = load_config_file(REPO / path)
    num_classes = data.dataset_info(config.data).num_classes
    kwargs = model_kwargs(config, num_classes)
    variant, image_size = kwargs.pop("variant"), kwargs.pop("image_size")
    kwargs.pop("num_classes")
    if not isinstance(image_size, int):
        raise ValueError(f"{path}: square images only here, got image_size={image_size!r}")
    return variant, image_size, kwargs, num_classes, config.batch_size


def job_quickstart(repeats: int = 3, pipeline_batches: int = 30) -> dict[str, Any]:
    """The quickstart config's input pipeline alone vs its train step alone (images/s)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vit_jax import data, train_state
    from vit_jax.config import load_config_file

    config = load_config_file(REPO / "configs" / "quickstart.py")
    bs = config.batch_size
    info = data.dataset_info(config.data)
    it = data.build_train_iterator(config.data, batch_size=bs, seed=config.seed)
    first = next(it)
    for _ in range(3):  # start the prefetch thread and warm the decode caches
        next(it)
    t0 = time.perf_counter()
    for _ in range(pipeline_batches):
        next(it)
    pipeline_s = time.perf_counter() - t0
    it.close()
    pipeline = bs * pipeline_batches / pipeline_s

    model, optimizer = train_state.config_state_factory(config, info.num_classes)()
    graphdef, state = nnx.split((model, optimizer))
    step_fn = train_state.train_step(graphdef, train_state.optim_config(config))
    batch = {k: jnp.asarray(v) for k, v in first.items() if k in ("image", "labels")}
    rng = jax.random.PRNGKey(config.seed)
    t0 = time.perf_counter()
    compiled = jax.jit(step_fn, donate_argnums=0).lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}
    del model, optimizer, state

    def step():
        for _ in range(10):  # ~10 ms steps: time ten at once so timer overhead is negligible
            holder["state"], metrics = compiled(holder["state"], batch, rng)
        jax.block_until_ready((holder["state"], metrics))

    wall, cpu = timed(step, max(repeats, 3))
    times = [t / 10 for t in wall]
    train = bs / statistics.median(times)
    log(f"quickstart pipeline {pipeline:.0f} img/s, train {train:.0f} img/s")
    return {"batch": bs, "image_shape": list(first["image"].shape[1:]),
            "model": config.model.variant, "pipeline_img_s": pipeline, "train_img_s": train,
            "train_step_s": statistics.median(times), "compile_s": compile_s,
            "flops": flops_of(compiled), "ratio": pipeline / train}


def serve(variants: list[str], batch: int = 32, image_size: int = 224,
          kinds: tuple[str, ...] = ("forward", "train"), overrides: dict | None = None) -> None:
    """Duel worker (``benchmarks/duel.py``): compiles each variant's inference and/or train
    step (``kinds``), then runs steps on command, so the driver can alternate with timm step
    by step. ``overrides``: model options (e.g. ``dtype``)."""
    import jax

    steps: dict[str, Any] = {}
    for variant in variants:  # keys "<variant>|forward" and "<variant>|train"
        config = {"label": variant, **{k: k in kinds for k in ("forward", "train")}}
        _compare_one(config, {}, steps, variant, batch, image_size, overrides or {}, None)
    serve_loop(steps, {"jax": jax.__version__})


JOBS = {"peak": job_peak, "model": job_model, "compare": job_compare, "compile": job_compile,
        "memory": job_memory, "quickstart": job_quickstart}


def main() -> None:
    spec = json.loads(sys.argv[1])
    from vit_jax.runtime import configure_runtime

    added = configure_runtime()
    if "serve" in spec:
        serve(**spec["serve"])
        return
    import jax

    header = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "added_by_runtime": added,
              "jax": jax.__version__, "backend": jax.default_backend(),
              "devices": jax.device_count()}
    log(f"XLA_FLAGS={header['xla_flags']!r}")
    results = []
    for job in spec["jobs"]:
        job = dict(job)
        kind = job.pop("kind")
        label = job.pop("label", kind)
        t0 = time.perf_counter()
        try:
            result = JOBS[kind](**job)
        except Exception as e:  # noqa: BLE001 (one failed job must not lose the others)
            log(f"job {label} failed: {type(e).__name__}: {e}")
            result = {"error": f"{type(e).__name__}: {e}"}
        results.append({"label": label, "kind": kind, "wall_s": time.perf_counter() - t0,
                        **result})
    print(json.dumps({**header, "results": results}), flush=True)


if __name__ == "__main__":
    main()
