"""The device check: correctness, speed, the timm peer, memory and pixel tokens on one device.

  scripts/device_check.sh [--out DIR]     # on a GPU machine: DIR/RESULTS_GPU.md + .json
  scripts/device_check.sh --tiny          # the same path at toy sizes, on CPU (the test suite)

Runs on whatever accelerator JAX finds, within a time budget (7 minutes by default, set-up
included): every section is a subprocess with a timeout, a section that no longer fits is
skipped and says so, and the report is rewritten after each section, so a run cut short still
leaves what it measured. Sections, in order:

1. correctness (concurrently: nothing in it is timed): ``pytest -m device`` on the device,
   the quickstart trained with the default (bf16 on GPU) dtype to its accuracy target, and the
   planner's predicted peak memory per variant (compiled on the CPU, as a user plans);
2. peak: the bf16 and f32 matmul rates, the MFU denominators;
3. speed: train step and inference img/s, MFU, compile times, measured vs predicted memory,
   one process per variant;
4. peer: vit_jax against timm (bf16 autocast, ``torch.compile``, fused AdamW) step for step on
   the same device (``benchmarks/duel.py``);
5. kernels: the train step with a named attention kernel, beside section 3's default path:
   B/16's 197 tokens through ``attention="cudnn"`` (cuDNN padded by one masked key: the
   measurement ``auto`` waits for before taking it), and pixel tokens, S/1 on 64×64 images
   (4,097 tokens), ``chunked`` against ``cudnn``;
6. flags: the B/16 train step with candidate XLA options against the default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vit_jax.runtime import host_info

REPO = Path(__file__).resolve().parents[1]
GiB = 2**30

# What runs, at full size (one H200: ~141 GB, ~800 bf16 TFLOP/s) and at toy size on CPU.
FULL = dict(
    budget_s=420, peak=dict(n=8192, repeats=20), image_size=224, overrides={}, repeats=10,
    variants=[("Ti/16", 1024), ("S/16", 512), ("B/16", 256), ("L/16", 128)],
    duel=dict(variants=["B/16", "L/16"], rounds=7, steps_per_round=3),
    # (variant, image size, batch, attention): train steps with a named kernel.
    kernels=[("B/16", 224, 256, "cudnn"), ("S/1", 64, 32, "chunked"), ("S/1", 64, 32, "cudnn")],
    pytest=["-n", "4"], quickstart=[], accuracy_target=0.95,
    # The order sections run in, most wanted first: what no longer fits the budget is skipped.
    order=["speed B/16", "kernels", "speed L/16", "peer B/16", "speed S/16", "speed Ti/16",
           "flags B/16", "peer L/16"],
    # GPU options a user might try; one becomes a default only where it wins here.
    flags={"latency_hiding_scheduler": {"xla_gpu_enable_latency_hiding_scheduler": True},
           "no_triton_gemm": {"xla_gpu_enable_triton_gemm": False}},
)
TINY = dict(
    budget_s=600, peak=dict(n=256, repeats=3), image_size=32, overrides={"depth": 1},
    repeats=3, variants=[("Ti/16", 4), ("S/16", 4)],
    duel=dict(variants=["Ti/16"], rounds=2, steps_per_round=1, image_size=32),
    kernels=[("S/1", 8, 2, "chunked"), ("S/1", 8, 2, "auto")],  # no cuDNN on a CPU
    pytest=["-k", "learns"], accuracy_target=None,
    quickstart=["--config.total_steps=20", "--config.eval_every_steps=20",
                "--config.checkpoint_every_steps=20", "--config.log_every_steps=10",
                "--config.optim.warmup_steps=5"],
    order=["speed Ti/16", "speed S/16", "peer Ti/16", "kernels", "flags Ti/16"],
    # An XLA:CPU option, so that the section's path runs on CPU too.
    flags={"no_fast_min_max": {"xla_cpu_enable_fast_min_max": False}},
)
CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"  # every job process inherits it
# The targets on one H200.
TARGET_MFU, TARGET_PEER, TARGET_PLAN = 0.50, 1.2, 0.15


def log(msg: str) -> None:
    print(f"[device_check] {msg}", file=sys.stderr, flush=True)


class Check:
    """The run: its budget, the results so far, and the report rewritten after each section."""

    def __init__(self, size: dict, out: Path, budget_s: float, scratch: Path):
        self.size, self.out, self.scratch = size, out, scratch
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.results: dict[str, Any] = {"tiny": size is TINY, "budget_s": budget_s,
                                        "host": host_info(), "sections": {}}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, name: str, need_s: float) -> bool:
        """Whether ``need_s`` more seconds fit the budget; records a skip when not."""
        if self.remaining() >= need_s:
            return True
        self.results["sections"].setdefault("skipped", []).append(
            f"{name}: out of time ({self.remaining():.0f} s left, needs ~{need_s:.0f} s)")
        log(f"skipping {name}: out of time")
        return False

    def save(self) -> None:
        self.results["elapsed_s"] = time.monotonic() - self.t0
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "RESULTS_GPU.json").write_text(json.dumps(self.results, indent=1))
        (self.out / "RESULTS_GPU.md").write_text(report(self.results))


def job(spec: dict, timeout: float, env: dict | None = None) -> dict:
    """Runs one ``benchmarks.device_jobs`` job in its own process; its JSON or an error."""
    cmd = [sys.executable, "-m", "benchmarks.device_jobs", json.dumps(spec)]
    try:
        r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True,
                           timeout=max(timeout, 1), env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = r.stdout.strip().splitlines()
    if r.returncode or not lines:
        return {"error": f"exit {r.returncode} (its error is in the log above)"}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- sections


def correctness(check: Check, platforms: str, dtype: str) -> None:
    """pytest -m device and the quickstart on the device, the planner on the CPU, at once."""
    size, sections = check.size, check.results["sections"]
    scratch = check.scratch
    shared = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_PLATFORMS": platforms}
    env = {**os.environ, **shared}
    timeout = min(240.0, check.remaining() - 30)
    log("correctness: pytest -m device, the quickstart and the planner, side by side")
    t0 = time.monotonic()
    pytest = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device",
         "tests/test_device.py", *size["pytest"]], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workdir = scratch / "quickstart"
    quick = subprocess.Popen(
        [sys.executable, "-m", "vit_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", *size["quickstart"]], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The planner as a user runs it on the CPU, and compiled for this machine's accelerator.
    backends = ["cpu"] + ([check.results["env"]["backend"]] if platforms != "cpu" else [])
    spec = {"kind": "plan", "variants": size["variants"], "image_size": size["image_size"],
            "dtype": dtype, "overrides": size["overrides"]}
    with ThreadPoolExecutor(len(backends)) as pool:
        plans = pool.map(lambda b: job(
            {**spec, "backend": b}, timeout=max(timeout - (time.monotonic() - t0), 1),
            env={**shared, "JAX_PLATFORMS": "cpu" if b == "cpu" else platforms}), backends)
        sections["plan"] = dict(zip(backends, plans, strict=True))
    out = {}
    for name, proc in (("pytest", pytest), ("quickstart", quick)):
        try:
            text, _ = proc.communicate(timeout=max(timeout - (time.monotonic() - t0), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
            out[name] = {"error": f"timed out after {timeout:.0f} s"}
        out.setdefault(name, {})["returncode"] = proc.returncode
        out[name]["tail"] = text.strip().splitlines()[-12:]
        sys.stderr.write(f"--- {name} ---\n" + "\n".join(out[name]["tail"]) + "\n")
    out["pytest"]["summary"] = next((line for line in reversed(out["pytest"]["tail"])
                                     if " passed" in line or " failed" in line), "")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
               if line.strip()] if (workdir / "metrics.jsonl").exists() else []
    evals = [r for r in records if "eval/accuracy" in r]
    if evals:
        out["quickstart"].update(step=evals[-1]["step"], accuracy=evals[-1]["eval/accuracy"])
    out["quickstart"]["target"] = size["accuracy_target"]
    out["seconds"] = time.monotonic() - t0
    sections["correctness"] = out


def speed(check: Check, variant: str) -> None:
    size = check.size
    rows = check.results["sections"].setdefault("speed", {})
    batch = dict(size["variants"])[variant]
    if not check.fits(f"speed {variant}", 25):
        return
    log(f"speed: {variant} at batch {batch}")
    rows[variant] = job({"kind": "speed", "variant": variant, "batch": batch,
                         "image_size": size["image_size"], "overrides": size["overrides"],
                         "repeats": size["repeats"]}, timeout=min(150, check.remaining()))


def peer(check: Check, variant: str) -> None:
    from benchmarks import duel

    spec, sections = check.size["duel"], check.results["sections"]
    exe = duel.peers_python()
    if exe is None:
        sections["peer"] = {"skipped": "torch + timm not installed here"}
        return
    gpu = check.results["env"].get("backend") == "gpu"
    rows = sections.setdefault("peer", {"rows": [], "gpu": gpu})
    if not check.fits(f"peer {variant}", 110 if gpu else 30):
        return
    log(f"peer: {variant} against timm, step for step")
    try:
        r = duel.duel([variant], batch=dict(check.size["variants"]).get(variant, 4),
                      rounds=spec["rounds"],
                      image_size=spec.get("image_size", check.size["image_size"]),
                      python=exe, kinds=("train",), steps_per_round=spec["steps_per_round"],
                      gpu=gpu)
    except Exception as e:  # noqa: BLE001 (a failed peer must not lose the report)
        rows.setdefault("errors", []).append(f"{variant}: {type(e).__name__}: {e}")
        return
    rows["rows"] += r["rows"]
    rows["workers"] = r["workers"]


def kernels(check: Check) -> None:
    rows = check.results["sections"].setdefault("kernels", {})
    for variant, image_size, batch, attention in check.size["kernels"]:
        name = f"{variant} {attention}"
        if not check.fits(f"kernels {name}", 30):
            continue
        log(f"kernels: {variant} at {image_size}px, batch {batch}, attention={attention}")
        rows[name] = job({"kind": "speed", "variant": variant, "batch": batch,
                          "image_size": image_size,
                          "overrides": {**check.size["overrides"], "attention": attention},
                          "repeats": check.size["repeats"], "forward": False},
                         timeout=min(150, check.remaining()))
        rows[name].update(asked=attention)
        check.save()


def flags(check: Check, variant: str) -> None:
    if not check.fits(f"flags {variant}", 100 if len(check.size["flags"]) > 1 else 20):
        return
    log(f"flags: {variant} train step with {list(check.size['flags'])}")
    check.results["sections"]["flags"] = job(
        {"kind": "flags", "variant": variant, "batch": dict(check.size["variants"])[variant],
         "image_size": check.size["image_size"], "overrides": check.size["overrides"],
         "flags": check.size["flags"]},
        timeout=min(200, check.remaining()))


SECTIONS = {"speed": speed, "peer": peer, "kernels": lambda check, *_: kernels(check),
            "flags": flags}


def run(size: dict, out: Path, budget_s: float) -> dict:
    """The check, in a scratch directory (the quickstart's workdir, the compilation cache)
    removed when it ends, however it ends: only ``out`` keeps anything."""
    with tempfile.TemporaryDirectory(prefix="device_check_") as scratch:
        # Later processes reuse what earlier ones compiled (the duel's vit_jax step is the
        # speed section's): compile times are reported from each program's first, uncached
        # compile. A cache the caller chose is kept; ours goes with the scratch directory, and
        # the variable with it, so nothing after the check points at a removed directory.
        chosen = os.environ.get(CACHE_VARIABLE)
        os.environ[CACHE_VARIABLE] = chosen or str(Path(scratch) / "jax_cache")
        try:
            return _run(Check(size, out, budget_s, Path(scratch)))
        finally:
            if chosen is None:
                del os.environ[CACHE_VARIABLE]
            else:
                os.environ[CACHE_VARIABLE] = chosen


def _run(check: Check) -> dict:
    size, out = check.size, check.out
    env = job({"kind": "env"}, timeout=120)
    check.results["env"] = env
    if "error" in env:
        check.save()
        raise SystemExit(f"device_check: JAX did not start: {env['error']}")
    gpu = env["backend"] == "gpu"
    log(f"backend {env['backend']} ({env['device_kind']}), auto dtype {env['auto_dtype']}")
    platforms = "cuda,cpu" if gpu else env["backend"]
    if check.fits("correctness", 60):
        correctness(check, platforms, env["auto_dtype"])
        check.save()
    if check.fits("peak", 20):
        check.results["sections"]["peak"] = job({"kind": "peak", **size["peak"]}, timeout=90)
        check.save()
    for item in size["order"]:
        name, _, arg = item.partition(" ")
        SECTIONS[name](check, arg)
        check.save()
    log(f"done in {time.monotonic() - check.t0:.0f} s: {out / 'RESULTS_GPU.md'}")
    return check.results


# ----------------------------------------------------------------------------- report


def _gb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / GiB:.2f} GiB"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def planned(s: dict, name: str, backend: str | None) -> float | None:
    """The planner's predicted peak for ``name`` compiled on ``backend`` (None: not run)."""
    if backend is None:
        return None
    plan = s.get("plan", {}).get(backend, {})
    return plan.get("variants", {}).get(name, {}).get("predicted_peak_bytes")


def _vs(estimate: float | None, measured: float | None) -> str:
    if estimate is None:
        return "n/a"
    if not measured:
        return _gb(estimate)
    return f"{_gb(estimate)} ({estimate / measured - 1:+.1%})"


def _vs_default(s: dict, row: dict) -> str:
    """A kernels row's train img/s over section 2's row of the same model, batch and image
    size (the default path), or "n/a" where section 2 ran no such step."""
    default = s.get("speed", {}).get(row["variant"], {})
    same = all(default.get(k) == row[k] for k in ("batch", "image_size"))
    if not same or "train" not in default:
        return "n/a"
    return f"{row['train']['img_s'] / default['train']['img_s']:.2f}×"


def mfu(row: dict, peak_tflops: float | None, key: str) -> float | None:
    train = row.get("train") or {}
    flops = row.get("analytic_flops") if key == "analytic" else train.get("xla_flops")
    if not peak_tflops or not flops or not train.get("step_s"):
        return None
    return flops / train["step_s"] / (peak_tflops * 1e12)


def report(r: dict) -> str:
    env, host, s = r.get("env", {}), r["host"], r["sections"]
    v = env.get("versions", {})
    peak = s.get("peak", {})
    bf16 = peak.get("bfloat16")
    lines = [
        "# Device check" + (" (tiny mode: toy sizes, for the test suite)" if r["tiny"] else ""),
        "",
        "Written by `scripts/device_check.sh` (`benchmarks/device_check.py`); "
        f"{r.get('elapsed_s', 0):.0f} s of a {r['budget_s']:.0f} s budget.",
        "",
        f"- device: {env.get('device_kind')} ×{env.get('device_count')} "
        f"({host.get('gpu', 'no nvidia-smi')}), backend `{env.get('backend')}`, "
        f"`dtype='auto'` → {env.get('auto_dtype')}",
        f"- host: {host.get('cpu', '?')}, {host.get('cpu_count')} cores, "
        f"ISA: {' '.join(host.get('isa', [])) or '?'}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
    ]
    if peak and "error" not in peak:
        lines.append(f"- matmul peak ({peak['n']}³, random data, median): bf16 "
                     f"{bf16:.1f} TFLOP/s, f32 (JAX default precision) "
                     f"{peak['float32']:.1f} TFLOP/s")
    if s.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(s["skipped"])]
    c = s.get("correctness")
    if c:
        q, p = c["quickstart"], c["pytest"]
        acc = q.get("accuracy")
        target = q.get("target")
        lines += ["", "## 1. Correctness", "",
                  f"- `pytest -m device` on the device: {p.get('summary') or p.get('error')} "
                  f"(exit {p['returncode']})",
                  f"- quickstart (default dtype): eval accuracy "
                  f"{'n/a' if acc is None else f'{acc:.4f}'} at step {q.get('step')}"
                  + (f" (target ≥ {target}: {_met(acc is not None and acc >= target)})"
                     if target else "") + f", exit {q['returncode']}"]
    rows = s.get("speed", {})
    if rows:
        lines += ["", "## 2. Speed and memory (the default path: `dtype='auto'`, "
                  "`attention='auto'`, AdamW, donated state)", "",
                  "MFU: the analytic FLOPs (matmuls + attention, `vit_jax.plan.analytic_flops`) "
                  "over the bf16 matmul peak above; XLA's cost analysis is shown too, but on "
                  "GPU it leaves out the matmuls XLA hands to cuBLAS. Memory: the measured peak "
                  "(`memory_stats()['peak_bytes_in_use']`), XLA's own estimate of the compiled "
                  "step, and the planner compiled on the CPU (`python -m vit_jax.plan`) and, "
                  "where it ran, for this device (`--backend`).", "",
                  "| model | batch | train img/s | MFU | MFU (XLA FLOPs) | "
                  "inference img/s | compile train / fwd (s) | attention | peak measured | "
                  "XLA estimate | planner, CPU | planner, device |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, row in sorted(rows.items(), key=lambda kv: kv[1].get("params", 0)):
            if "error" in row:
                lines.append(f"| {name} | | {row['error']} |||||||||")
                continue
            t, f = row["train"], row.get("forward", {})
            measured = t.get("measured_peak_bytes")
            m_xla, m_ana = mfu(row, bf16, "xla"), mfu(row, bf16, "analytic")
            estimates = [(t.get("xla_memory") or {}).get("peak"),
                         planned(s, name, "cpu"),
                         None if env.get("backend") == "cpu" else
                         planned(s, name, env.get("backend"))]
            lines.append(
                f"| {name} | {row['batch']} | {t['img_s']:.1f} | "
                f"{'n/a' if m_ana is None else f'**{m_ana:.1%}**'} | "
                f"{'n/a' if m_xla is None else f'{m_xla:.1%}'} | "
                f"{f.get('img_s', float('nan')):.1f} | {t['total_s']:.1f} / "
                f"{f.get('compile_s', float('nan')):.1f} | {t['attention']} | {_gb(measured)} | "
                + " | ".join(_vs(e, measured) for e in estimates) + " |")
    pr = s.get("peer")
    if pr:
        lines += ["", "## 3. The peer, step for step on the same device", ""]
        if "skipped" in pr:
            lines.append(f"Skipped: {pr['skipped']}.")
        else:
            timm_how = ("bf16 autocast, `torch.compile`, fused AdamW" if pr["gpu"]
                        else "f32, eager")
            lines += [f"timm ({timm_how}) against vit_jax's default path, same batch, "
                      "alternating rounds (`benchmarks/duel.py`).", "",
                      "| model | vit_jax img/s | timm img/s | vit_jax / timm (median) | "
                      "range |", "|---|---|---|---|---|"]
            for row in pr["rows"]:
                lines.append(f"| {row['variant']} train | {row['vit_jax_img_s']:.1f} | "
                             f"{row['timm_img_s']:.1f} | **{row['ratio']:.2f}×** | "
                             f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f} |")
            lines += [f"- error: {e}" for e in pr.get("errors", [])]
    kr = s.get("kernels")
    if kr:
        lines += ["", "## 4. Attention kernels", "",
                  "The train step with the kernel asked for (`model.attention`), and its speed "
                  "against section 2's default path where that ran the same model, batch and "
                  "image size (B/16: `auto` takes the padded cuDNN kernel at odd token counts "
                  "once it is faster here and `pytest -m device` passes).", "",
                  "| model | image | tokens | attention asked / found | batch | train img/s | "
                  "vs default path | peak measured | compile (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in kr.items():
            if "error" in row:
                lines.append(f"| {name} | | | {row.get('asked')} | | {row['error']} | | | |")
                continue
            t = row["train"]
            tokens = (row["image_size"] // int(row["variant"].split("/")[1])) ** 2 + 1
            lines.append(f"| {row['variant']} | {row['image_size']}² | {tokens} | "
                         f"{row['asked']} / {t['attention']} | {row['batch']} | "
                         f"{t['img_s']:.1f} | {_vs_default(s, row)} | "
                         f"{_gb(t.get('measured_peak_bytes'))} | {t['total_s']:.1f} |")
    fl = s.get("flags")
    if fl:
        lines += ["", "## 5. XLA options", "",
                  f"{fl.get('variant')} train step at batch {fl.get('batch')}, each against the "
                  "default in ABBA pairs (> 1: faster than the default).", "",
                  "| options | step (ms) | speed vs default |", "|---|---|---|"]
        if "error" in fl:
            lines.append(f"| | {fl['error']} | |")
        for label, row in fl.get("flags", {}).items():
            ratio = row.get("ratio")
            step = row.get("step_s")
            lines.append(f"| {label} {row.get('options') or ''} | "
                         f"{'n/a' if step is None else f'{step * 1e3:.1f}'} | "
                         f"{row.get('error') or ('' if ratio is None else f'{ratio:.3f}×')} |")
    lines += ["", "## Targets", ""] + targets(r)
    if r.get("notes"):
        lines += ["", "## Reading these figures", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def targets(r: dict) -> list[str]:
    """The issue's targets, each with what was measured (only meaningful on a GPU)."""
    s = r["sections"]
    bf16 = s.get("peak", {}).get("bfloat16")
    out = []
    for name in ("B/16", "L/16"):
        row = s.get("speed", {}).get(name)
        if row and "train" in row:
            m = mfu(row, bf16, "analytic")
            met = _met(None if m is None else m >= TARGET_MFU)
            line = (f"- {name} train step ≥ {TARGET_MFU:.0%} MFU: "
                    f"{'n/a' if m is None else f'{m:.1%}'} of the peak measured here → {met}")
            ref = r.get("reference_peak")
            if ref and m is not None:
                m_ref = mfu(row, ref["tflops"], "analytic")
                line += (f"; {m_ref:.1%} of {ref['tflops']:.0f} TFLOP/s ({ref['source']}) → "
                         f"{_met(m_ref >= TARGET_MFU)}")
            out.append(line)
    for row in s.get("peer", {}).get("rows", []):
        peer_name = "timm + torch.compile" if s["peer"]["gpu"] else "timm (eager, f32)"
        out.append(f"- {row['variant']} ≥ {TARGET_PEER}× {peer_name} step for step: "
                   f"{row['ratio']:.2f}× → {_met(row['ratio'] >= TARGET_PEER)}")
    backend = r.get("env", {}).get("backend")
    for name, row in s.get("speed", {}).items():
        measured = (row.get("train") or {}).get("measured_peak_bytes")
        for where in dict.fromkeys(["cpu", backend]):
            predicted = planned(s, name, where)
            if measured and predicted:
                err = predicted / measured - 1
                out.append(f"- {name} planner ({where}) within {TARGET_PLAN:.0%} of the "
                           f"measured peak: {err:+.1%} → {_met(abs(err) <= TARGET_PLAN)}")
    out.append("- input pipeline feeding B/16 with < 5% of the step waiting: not measured by "
               "this check (see benchmarks/RESULTS.md for the host pipeline)")
    return out or ["- none measurable on this backend"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes (seconds on CPU): the suite's check that this never rots")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks",
                   help="where RESULTS_GPU.md and RESULTS_GPU.json go (default: benchmarks/)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for the whole check (default: 420, 600 in tiny mode)")
    args = p.parse_args(argv)
    size = TINY if args.tiny else FULL
    budget = args.budget_s if args.budget_s is not None else size["budget_s"]
    if not math.isfinite(budget) or budget <= 0:
        p.error(f"--budget-s must be a positive number of seconds, got {budget}")
    run(size, args.out.expanduser().resolve(), budget)


if __name__ == "__main__":
    main()
