"""Throughput, MFU, compile time and memory of vit_jax on this machine, next to timm.

  python -m benchmarks.throughput [--variants Ti/16,S/16,B/16] [--batch 32] [--repeats 3]
      [--peers] [--sections models,memory,compile,quickstart,flags,malloc,levers] [--out PATH]

Quick look (~3 min): ``--variants Ti/16 --repeats 2 --sections models,flags``.

Writes a markdown report (default ``benchmarks/RESULTS.md``) and prints it. Every measurement
runs in a subprocess (``benchmarks/jax_measure.py``), one per set of XLA flags, because
``XLA_FLAGS`` is read once, when JAX's backend starts. The main process only orchestrates, so
numbers in one table share a process and its flags. ``--peers`` compares with timm step for step
(``benchmarks/duel.py``: a vit_jax and a timm worker alive together, taking turns), because the
machine's speed drifts too much over minutes for ratios of separate runs.

Timing: each step is run once to warm up, then ``--repeats`` times; tables show medians.
MFU = XLA ``cost_analysis()`` FLOPs of the step / step time, over the median GFLOP/s of a
4096³ f32 ``jnp.dot`` measured in the same process. Memory is XLA's ``memory_analysis()`` of
the compiled train step (peak = arguments + outputs - donated aliases + temporaries).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.duel import TIMM_NAMES, duel
from benchmarks.duel import table as duel_table
from vit_jax.runtime import host_info

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("models", "memory", "compile", "quickstart", "flags", "malloc", "levers")
QUICKSTART = "configs/quickstart.py"
# XLA:CPU options compared. Process level: ``XLA_FLAGS`` strings, one process each (None = the
# environment as is, i.e. with whatever vit_jax.runtime adds on CPU; a string = opt out of
# that and set exactly this). Per-jit: the same options as ``compiler_options`` of each
# compilation, in one process, each paired with the default (finer ratios).
YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
ONEDNN = "--xla_cpu_use_onednn=true"
FLAG_SETS: dict[str, str | None] = {
    "vit_jax default": None,
    "XLA default (opt-out)": "",
    "YNN fusions off + oneDNN": f"{YNN_OFF} {ONEDNN}",
}
FLAG_OPTIONS: dict[str, dict] = {
    "XLA default": {},
    "YNN fusions off + oneDNN": {"xla_cpu_experimental_ynn_fusion_type": "",
                                 "xla_cpu_use_onednn": True},
    "YNN fusions off": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "oneDNN": {"xla_cpu_use_onednn": True},
}
INFERENCE_OPTIONS = {"YNN off": FLAG_OPTIONS["YNN fusions off"]}
# Levers: model options (and donation) changed one at a time from the model's defaults.
LEVERS: tuple[tuple[str, dict, bool], ...] = (
    # (name, overrides, also time inference)
    ("patch_embed_method=conv", {"patch_embed_method": "conv"}, True),
    ("patch_embed_method=patchify", {"patch_embed_method": "patchify"}, True),
    ("attention=standard", {"attention": "standard"}, True),
    ("attention=xla", {"attention": "xla"}, True),
    ("attention=chunked", {"attention": "chunked"}, True),
    ("scan=False", {"scan": False}, True),
    ("scan=True", {"scan": True}, True),
    ("remat_policy=none", {"remat_policy": "none"}, False),
    ("remat_policy=dots", {"remat_policy": "dots"}, False),
    ("remat_policy=full", {"remat_policy": "full"}, False),
    ("no donation", {}, False),
)
TARGETS = {"timm_ratio": 1.3, "mfu": 0.70, "b16_compile_s": 15.0, "h14_over_b16": 1.3,
           "pipeline_ratio": 5.0}


def log(msg: str) -> None:
    print(f"[throughput] {msg}", file=sys.stderr, flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------- subprocesses


def run_jax(jobs: list[dict], xla_flags: str | None = None,
            env_extra: dict[str, str] | None = None) -> dict:
    """Runs ``jobs`` in a fresh JAX process; ``xla_flags`` not None replaces the defaults;
    ``env_extra``: more environment for that process."""
    env = {**os.environ, **(env_extra or {})}
    if xla_flags is not None:
        env["VIT_JAX_CPU_FLAGS"] = "0"
        env["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), xla_flags]).strip()
    cmd = [sys.executable, "-m", "benchmarks.jax_measure", json.dumps({"jobs": jobs})]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"benchmark worker failed (exit {proc.returncode}); see stderr above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the run


def collect(args: argparse.Namespace) -> dict:
    variants, batch, reps, size = args.variants, args.batch, args.repeats, args.image_size
    sections = set(args.sections)
    out: dict = {"args": vars(args), "load_before": os.getloadavg(), "started": time.time()}

    main_jobs: list[dict] = [{"kind": "peak", "repeats": 5}]
    if "models" in sections:
        main_jobs += [{"kind": "model", "label": f"model {v}", "variant": v, "batch": batch,
                       "image_size": size, "repeats": reps,
                       "forward_options": INFERENCE_OPTIONS} for v in variants]
        main_jobs.append({"kind": "model", "label": "model quickstart", "config": QUICKSTART,
                          "repeats": max(reps, 5)})
    if "memory" in sections:
        main_jobs += [{"kind": "memory", "label": f"memory {v} scan={scan}", "variant": v,
                       "batch": batch, "image_size": size, "overrides": {"scan": scan},
                       "policies": ["none", "dots", "full"]}
                      for v in variants for scan in (True, False)]
    if "compile" in sections:
        main_jobs += [
            {"kind": "compile", "label": "compile B/16 scan", "variant": "B/16", "batch": batch,
             "overrides": {"scan": True}},
            {"kind": "compile", "label": "compile H/14 scan", "variant": "H/14", "batch": 2,
             "overrides": {"scan": True}},
        ]
    if "quickstart" in sections:
        main_jobs.append({"kind": "quickstart", "repeats": max(reps, 5)})
    log(f"main process: {len(main_jobs)} jobs")
    out["main"] = run_jax(main_jobs)

    if "flags" in sections:
        from vit_jax.runtime import configure_runtime  # no jax import: only reads the env

        # Which flags the runtime would add (its allocator opt-out leaves this process alone).
        runtime_adds = configure_runtime({**os.environ, "VIT_JAX_CPU_MALLOC": "0"})
        jobs = [{"kind": "peak", "repeats": 5},
                {"kind": "model", "variant": args.flags_variant, "batch": batch, "repeats": reps,
                 "image_size": size}]
        out["flags"] = {}
        for name, flags in FLAG_SETS.items():
            if flags is None and not runtime_adds:
                continue  # vit_jax adds no flags here: the same as "XLA default (opt-out)"
            log(f"XLA_FLAGS set {name!r}")
            out["flags"][name] = run_jax(jobs, flags)
        configs = [{"label": name, "options": options} for name, options in FLAG_OPTIONS.items()]
        log(f"per-jit XLA options on {args.flags_variant}, paired")
        out["flag_options"] = run_jax([{"kind": "compare", "variant": args.flags_variant,
                                        "batch": batch, "image_size": size, "repeats": reps,
                                        "configs": configs}], "")

    if "malloc" in sections:
        # The allocator is set when a process starts: one process per setting, alternating.
        job = {"kind": "model", "variant": args.flags_variant, "batch": batch,
               "image_size": size, "repeats": reps, "forward": False}
        out["malloc"] = {"1": [], "0": []}
        for _ in range(2):
            for setting in ("1", "0"):
                log(f"host allocator VIT_JAX_CPU_MALLOC={setting}")
                out["malloc"][setting].append(run_jax([job], env_extra={
                    "VIT_JAX_CPU_MALLOC": setting}))

    if "levers" in sections:
        configs = [{"label": "baseline"}]
        configs += [{"label": name, "overrides": overrides, "forward": forward,
                     "donate": name != "no donation", "skip_if_default": True}
                    for name, overrides, forward in LEVERS]
        log(f"levers on {args.lever_variant}, paired with the baseline")
        out["levers"] = run_jax([{"kind": "compare", "variant": args.lever_variant,
                                  "batch": batch, "image_size": size, "repeats": reps,
                                  "configs": configs}])

    if args.peers:
        peers = [v for v in variants if v in TIMM_NAMES]
        log(f"vit_jax vs timm, step for step: {peers}")
        try:
            out["duel"] = duel(peers, batch, rounds=max(reps, 7), image_size=size)
        except (RuntimeError, ValueError) as e:
            out["duel"] = {"error": str(e)}
    out["load_after"] = os.getloadavg()
    out["minutes"] = (time.time() - out["started"]) / 60
    return out


# ----------------------------------------------------------------------------- report


def _by_label(proc: dict) -> dict[str, dict]:
    return {r["label"]: r for r in proc.get("results", [])}


def _fmt(x, spec: str = ".1f", missing: str = "—") -> str:
    return missing if x is None else format(x, spec)


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:,.0f}"


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def model_rows(run: dict) -> tuple[list[str], list[str], dict]:
    """The vit_jax throughput table, the vit_jax-vs-timm table, and a summary for targets."""
    main = _by_label(run["main"])
    peak = _get(main, "peak", "gflops")
    lines = ["| model | image | batch | params (M) | inference img/s | inference img/s, YNN "
             "off per-jit | train img/s | train CPU·s/step | train compile s | train GFLOP/img | "
             "train GFLOP/s | MFU |", "|" + "---|" * 12]
    summary = {}
    labels = [f"model {v}" for v in run["args"]["variants"]] + ["model quickstart"]
    for label in labels:
        r = main.get(label)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {label[6:]} | error: {r['error'][:80]} |" + " |" * 10)
            continue
        quick = label == "model quickstart"
        name = f"quickstart ({r['variant']})" if quick else r["variant"]
        fwd, tr = r.get("forward", {}), r.get("train", {})
        gflops = tr["flops"] / tr["step_s"] / 1e9 if tr else None
        mfu = gflops / peak if gflops and peak else None
        summary[name if quick else r["variant"]] = dict(mfu=mfu)
        lines.append(
            f"| {name} | {r['image_size']}² | {r['batch']} | {r['params'] / 1e6:.1f} | "
            f"{_fmt(fwd.get('img_s'))} | {_fmt(_get(r, 'forward_with', 'YNN off', 'img_s'))} | "
            f"{_fmt(tr.get('img_s'), '.2f')} | "
            f"{_fmt(tr.get('cpu_s'), '.2f')} | {_fmt(tr.get('total_s'))} | "
            f"{_fmt(tr['flops'] / r['batch'] / 1e9, '.2f')} | {_fmt(gflops, '.0f')} | "
            f"{_fmt(mfu and 100 * mfu, '.0f')}% |")
    for row in _get(run, "duel", "rows") or []:
        summary.setdefault(row["variant"], {})[f"ratio_{row['kind']}"] = row["ratio"]
    vs = duel_table(run["duel"]).splitlines() if _get(run, "duel", "rows") else []
    return lines, vs, summary


def memory_rows(run: dict) -> list[str]:
    main = _by_label(run["main"])
    lines = ["| model | batch | layers as | remat none: temp / peak MiB | dots: temp / peak | "
             "full: temp / peak |", "|---|---|---|---|---|---|"]
    for v in run["args"]["variants"]:
        for scan in (True, False):
            r = main.get(f"memory {v} scan={scan}")
            if not r or "error" in r:
                continue
            cells = [f"{_mib(p['temp'])} / {_mib(p['peak'])}" for p in r["policies"].values()]
            lines.append(f"| {v} | {r['batch']} | {'scan' if scan else 'loop'} | "
                         + " | ".join(cells) + " |")
    return lines


def compile_rows(run: dict) -> tuple[list[str], dict]:
    main = _by_label(run["main"])
    b, h = main.get("compile B/16 scan"), main.get("compile H/14 scan")
    lines = ["| train step (scan=True) | batch | lower s | compile s | total s |",
             "|---|---|---|---|---|"]
    for name, r in (("B/16", b), ("H/14", h)):
        if r and "error" not in r:
            lines.append(f"| {name} | {r['batch']} | {r['lower_s']:.1f} | {r['compile_s']:.1f} "
                         f"| {r['total_s']:.1f} |")
    ok = b and h and "error" not in b and "error" not in h
    return lines, {"b16": b["total_s"] if ok else None,
                   "ratio": h["total_s"] / b["total_s"] if ok else None}


def quickstart_rows(run: dict) -> tuple[list[str], dict]:
    q = _by_label(run["main"]).get("quickstart")
    if not q or "error" in q:
        return [], {}
    lines = ["| quickstart (digits, batch 128) | images/s |", "|---|---|",
             f"| input pipeline (`data.build_train_iterator`, in-process) | "
             f"{q['pipeline_img_s']:,.0f} |",
             f"| train step ({q['model']} at {q['image_shape'][0]}², "
             f"{q['train_step_s'] * 1e3:.0f} ms/step) | {q['train_img_s']:,.0f} |",
             f"| pipeline / train step | **{q['ratio']:.1f}×** |"]
    return lines, {"ratio": q["ratio"]}


def flags_rows(run: dict) -> list[str]:
    flags = run.get("flags") or {}
    lines = ["| `XLA_FLAGS` | in effect | f32 matmul GFLOP/s | inference img/s | train img/s | "
             "train CPU·s/step | train compile s | inference vs XLA default | "
             "train vs XLA default |", "|---|---|---|---|---|---|---|---|---|"]
    ref = _by_label(flags.get("XLA default (opt-out)", {})).get("model", {})
    for name, proc in flags.items():
        res = _by_label(proc)
        m, peak = res.get("model", {}), _get(res, "peak", "gflops")
        fwd, tr = _get(m, "forward", "img_s"), _get(m, "train", "img_s")
        rf = fwd / _get(ref, "forward", "img_s") if fwd and _get(ref, "forward") else None
        rt = tr / _get(ref, "train", "img_s") if tr and _get(ref, "train") else None
        lines.append(f"| {name} | `{proc.get('xla_flags') or '(none)'}` | {_fmt(peak, '.0f')} | "
                     f"{_fmt(fwd)} | {_fmt(tr, '.2f')} | "
                     f"{_fmt(_get(m, 'train', 'cpu_s'), '.2f')} | "
                     f"{_fmt(_get(m, 'train', 'total_s'))} | "
                     f"{_fmt(rf, '.2f')}× | {_fmt(rt, '.2f')}× |")
    if "vit_jax default" not in flags:
        lines.append("\n`vit_jax.runtime` adds no flags here, so the vit_jax default is the XLA "
                     "default row.")
    return lines if len(lines) > 2 else []


def malloc_rows(run: dict) -> list[str]:
    """The train step with the runtime's allocator setting and without (opted out)."""
    runs = run.get("malloc") or {}
    lines = ["| host allocator | train img/s (each process) | × opted out (medians) | "
             "page faults / step | kernel CPU s / step | peak RSS MiB |",
             "|---|---|---|---|---|---|"]
    trains = {k: [_get(_by_label(p), "model", "train") or {} for p in procs]
              for k, procs in runs.items()}
    med = {k: statistics.median(t.get("img_s") or 0 for t in ts) if ts else None
           for k, ts in trains.items()}
    names = {"1": "vit_jax default (keep freed memory)", "0": "glibc default "
             "(`VIT_JAX_CPU_MALLOC=0`)"}
    for k, ts in trains.items():
        if not ts:
            continue
        ratio = med[k] / med["0"] if med.get(k) and med.get("0") else None
        lines.append(
            f"| {names[k]} | {', '.join(_fmt(t.get('img_s'), '.2f') for t in ts)} | "
            f"{_fmt(ratio, '.2f')}× | "
            f"{', '.join(_fmt(t.get('minor_faults'), ',.0f') for t in ts)} | "
            f"{', '.join(_fmt(t.get('system_s'), '.2f') for t in ts)} | "
            f"{', '.join(_fmt(t.get('max_rss_mib'), ',.0f') for t in ts)} |")
    return lines if len(lines) > 2 else []


def compare_rows(proc: dict, baseline: str, names: list[str]) -> list[str]:
    """Rows of a ``compare`` job: images/s and ratios to ``baseline`` (paired ABBA timings)."""
    res = (proc or {}).get("results") or [{}]
    cfgs = res[0].get("configs", {})
    base = cfgs.get(baseline, {})
    lines = ["| change | inference img/s | ×baseline | train img/s | ×baseline | "
             "train ×baseline by CPU time | train compile s | train peak MiB |",
             "|" + "---|" * 8]
    for name in names:
        r = cfgs.get(name)
        if r is None:
            continue
        if "error" in r or "skipped" in r:
            why = r.get("skipped") and f"= baseline ({r['skipped']})" or r["error"][:120]
            lines.append(f"| {name} | {why} |" + " |" * 6)
            continue
        f, t = _get(r, "forward", "img_s"), _get(r, "train", "img_s")
        tc, btc = _get(r, "train", "cpu_s"), _get(base, "train", "cpu_s")
        rf = 1.0 if r is base else _get(r, "forward", "ratio")  # median of paired ratios
        rt = 1.0 if r is base else _get(r, "train", "ratio")
        lines.append(
            f"| {name} | {_fmt(f)} | {_fmt(f and rf, '.2f')} | {_fmt(t, '.2f')} | "
            f"{_fmt(t and rt, '.2f')} | {_fmt(tc and btc and btc / tc, '.2f')} | "
            f"{_fmt(_get(r, 'train', 'total_s'))} | "
            f"{_mib(_get(r, 'train', 'memory', 'peak'))} |")
    return lines


def levers_rows(run: dict) -> list[str]:
    proc = run.get("levers")
    if not proc or not proc.get("results"):
        return []
    r = proc["results"][0]
    if "error" in r:
        return [f"Levers failed: {r['error'][:300]}"]
    d = r.get("defaults", {})
    return [f"Model: {r['variant']}, batch {r['batch']}, {r['image_size']}²; baseline = the "
            f"model's defaults (patch_embed_method={d.get('patch_embed_method')}, "
            f"attention={d.get('attention')}, scan={d.get('scan')}, "
            f"remat_policy={d.get('remat_policy')}, donation on). Each change is timed "
            "against the baseline in ABBA pairs in one process (×baseline = median of the "
            "per-pair ratios; > 1 is faster), holding only those two models.\n",
            *compare_rows(proc, "baseline", ["baseline"] + [n for n, _, _ in LEVERS])]


def target_rows(summary: dict, compile_s: dict, quick: dict) -> list[str]:
    t = TARGETS
    lines = ["| target | goal | measured | status |", "|---|---|---|---|"]

    def row(name, goal, value, ok, fmt=".2f", unit="×"):
        if value is None:
            lines.append(f"| {name} | {goal} | not measured | — |")
            return
        lines.append(f"| {name} | {goal} | {format(value, fmt)}{unit} | "
                     f"{'met' if ok else 'missed'} |")

    for v in ("Ti/16", "S/16"):
        s = summary.get(v, {})
        row(f"{v} train step vs timm", f"≥ {t['timm_ratio']}×", s.get("ratio_train"),
            (s.get("ratio_train") or 0) >= t["timm_ratio"])
    for v in ("Ti/16", "S/16", "B/16"):
        s = summary.get(v, {})
        if s.get("ratio_forward"):
            row(f"{v} inference vs timm", f"≥ {t['timm_ratio']}×", s.get("ratio_forward"),
                (s.get("ratio_forward") or 0) >= t["timm_ratio"])
    mfu = summary.get("S/16", {}).get("mfu")
    row("S/16 train step MFU (of measured f32 matmul)", f"≥ {t['mfu']:.0%}",
        mfu and 100 * mfu, (mfu or 0) >= t["mfu"], ".0f", "%")
    row("B/16 train-step compile, scan", f"≤ {t['b16_compile_s']:.0f} s", compile_s.get("b16"),
        (compile_s.get("b16") or 1e9) <= t["b16_compile_s"], ".1f", " s")
    row("H/14 compile / B/16 compile (scan)", f"≤ {t['h14_over_b16']}×", compile_s.get("ratio"),
        (compile_s.get("ratio") or 1e9) <= t["h14_over_b16"])
    row("input pipeline / quickstart train step", f"≥ {t['pipeline_ratio']:.0f}×",
        quick.get("ratio"), (quick.get("ratio") or 0) >= t["pipeline_ratio"], ".1f")
    return lines


def report(run: dict) -> str:
    main = run["main"]
    peak = _get(_by_label(main), "peak", "gflops")
    model_lines, vs_lines, summary = model_rows(run)
    compile_lines, compile_s = compile_rows(run)
    quick_lines, quick = quickstart_rows(run)
    workers = _get(run, "duel", "workers") or {}
    peers = workers.get("timm") or {"error": _get(run, "duel", "error")}
    host = host_info()
    cpu = host.get("cpu") or platform.processor()
    a = run["args"]
    cmd = ("python -m benchmarks.throughput --variants " + ",".join(a["variants"])
           + f" --batch {a['batch']} --repeats {a['repeats']}" + (" --peers" if a["peers"] else "")
           + ("" if a["image_size"] == 224 else f" --image-size {a['image_size']}")

           + ("" if set(a["sections"]) == set(SECTIONS) else " --sections "
              + ",".join(a["sections"])))
    out = [
        "# vit_jax throughput on this machine", "",
        f"`{cmd}` — {time.strftime('%Y-%m-%d %H:%M', time.localtime(run['started']))}, "
        f"{run['minutes']:.1f} min.", "",
        f"- CPU: {cpu}, {os.cpu_count()} cores, ISA: "
        f"{' '.join(host.get('isa', [])) or '?'}; jax {main.get('jax')} on "
        f"{main.get('backend')}; f32 matmul peak (4096³ `jnp.dot`, median) "
        f"**{_fmt(peak, '.0f')} GFLOP/s**.",
        f"- `XLA_FLAGS` of the main process: `{main.get('xla_flags') or '(none)'}` "
        f"(added by `vit_jax.runtime.configure_runtime`: "
        f"{', '.join(f'`{f}`' for f in main.get('added_by_runtime', [])) or 'none'}).",
        f"- Load average (1 min) before / after: {run['load_before'][0]:.2f} / "
        f"{run['load_after'][0]:.2f} on {os.cpu_count()} cores"
        + (" — **the machine was busy: treat absolute numbers as low**."
           if max(run['load_before'][0], run['load_after'][0]) > 2.5 else "."),
        "- Peers: " + (f"torch {peers['torch']}, timm {peers['timm']}, "
                        f"{peers['threads']} threads, same batch, f32."
                        if "torch" in peers else peers.get("error") or "not run (`--peers`)."),
        f"- Timing: median of {a['repeats']} steps after one warm-up step; train step = "
        "forward + backward + AdamW (`make_train_step`, jitted with state donation).",
        "- Other machine kinds, recorded from the commands they name: "
        "`benchmarks/RESULTS_INTEL.md` (Intel Xeon with AMX: the duel, where the time goes, "
        "bf16), `benchmarks/RESULTS_OTHER_AMD.md` (an AMD EPYC with a 202 GFLOP/s f32 peak: "
        "the duel, where the backward pass loses, the host allocator).", "",
        "## Throughput", "", *model_lines, "",
    ]
    if vs_lines:
        d = run["duel"]
        out += ["## vit_jax vs timm, step for step (`benchmarks/duel.py`)", "",
                f"Two live workers, batch {d['batch']}, {d['image_size']}², f32; {d['rounds']} "
                "rounds, each one vit_jax step and one timm step back to back (order alternating), "
                "so both see the same machine. Ratio = median over rounds of timm's step time "
                "over vit_jax's (> 1: vit_jax is faster).", "", *vs_lines, ""]
    if (memory := memory_rows(run))[2:]:
        out += ["## Train-step memory by remat policy (XLA `memory_analysis`)", "",
                "Remat only saves memory with the layers under `scan` on XLA:CPU: with the Python "
                "loop, XLA's scheduler hoists the recomputation and keeps every layer's "
                "activations anyway (same peak for all policies). Use `scan=True` with a remat "
                "policy when memory is the limit; the loop is faster when it fits.", "",
                *memory, ""]
    if compile_lines[2:]:
        out += ["## Compile time (train step, abstract state)", "", *compile_lines, ""]
    if quick_lines:
        out += ["## Input pipeline vs train step (quickstart config)", "", *quick_lines, ""]
    if run.get("flags") is not None:
        v = run["args"]["flags_variant"]
        out += ["## XLA:CPU flags", "",
                f"Model: {v}, batch {run['args']['batch']}, {run['args']['image_size']}². "
                "Each `XLA_FLAGS` row is its own process (XLA reads the variable when the backend "
                "starts):", "", *flags_rows(run), "",
                "The same options given per compilation (`jax.jit(...).lower(...).compile("
                "compiler_options=...)`), in one process, each timed against the XLA default "
                "in ABBA pairs:", "",
                *compare_rows(run.get("flag_options"), "XLA default", list(FLAG_OPTIONS)), ""]
    if malloc_lines := malloc_rows(run):
        v = run["args"]["flags_variant"]
        out += ["## Host memory", "",
                f"Model: {v}, batch {run['args']['batch']}, {run['args']['image_size']}², "
                "train step; each setting runs in two processes of its own (glibc reads it before "
                "JAX's threads start), alternating. XLA:CPU takes each step's "
                "scratch memory from `malloc` and frees it after the step; glibc maps a block "
                "that large anew each time, so the kernel faults in and zeroes every page of it "
                "again. `vit_jax.runtime.keep_freed_memory` keeps freed memory for reuse "
                "instead.", "", *malloc_lines, ""]
    if lever_lines := levers_rows(run):
        out += ["## Levers (one process, one change at a time)", "", *lever_lines, ""]
    out += ["## Targets", "", *target_rows(summary, compile_s, quick), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="Ti/16,S/16,B/16",
                   type=lambda s: [v.strip() for v in s.split(",") if v.strip()])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224,
                   help="of the variants' rows, flags and levers (compile targets stay 224)")
    p.add_argument("--peers", action="store_true", help="also time timm (needs torch + timm)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   help=f"any of {','.join(SECTIONS)}")
    p.add_argument("--flags-variant", default="Ti/16")
    p.add_argument("--lever-variant", default="Ti/16")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--json", default=None, help="also write the raw measurements here")
    args = p.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; valid: {','.join(SECTIONS)}")
    run = collect(args)
    text = report(run)
    Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(run, indent=1))
    print(text)
    log(f"wrote {args.out} ({run['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
