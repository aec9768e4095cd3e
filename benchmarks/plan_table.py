"""The README's scaling table: `vit_jax.plan` for B/16 .. g/14 on FSDP meshes, as markdown.

  python benchmarks/plan_table.py [--variants=B/16,L/16,H/14,g/14] [--meshes=8,64]
      [--batch=1024] [--device_memory=80GiB]

Each plan runs in its own process (the number of fake CPU devices is fixed when jax starts).
Memory is per device; FLOPs are for the whole step (all devices), forward + backward.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GiB = 2**30


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(variant: str, fsdp: int, batch: int, memory: str) -> tuple[dict, float, float]:
    cmd = [sys.executable, "-m", "vit_jax.plan", f"--variant={variant}", "--image_size=224",
           "--num_classes=1000", f"--mesh=fsdp={fsdp}", f"--batch={batch}",
           f"--device_memory={memory}", "--json"]
    t0, c0 = time.perf_counter(), _cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out), time.perf_counter() - t0, _cpu_seconds() - c0


def row(r: dict, seconds: float, cpu_seconds: float) -> str:
    base, s, f = r["base"], r["suggestion"], r["flops"]
    if r["fits"]:
        fix = "as is"
    elif s:
        fix = (f"remat {s['remat_policy']}" + (f", accum {s['grad_accum_steps']}"
               if s["grad_accum_steps"] > 1 else "") + f" → {s['peak_bytes'] / GiB:.1f}")
    else:
        fix = "none fits"
    cells = [r["variant"], f"{r['params'] / 1e6:.0f}M", f"fsdp={r['devices']}",
             str(r["per_device_batch"]), f"{base['params_bytes'] / GiB:.2f}",
             f"{base['opt_state_bytes'] / GiB:.2f}", f"{base['xla']['temp'] / GiB:.1f}",
             f"{base['peak_bytes'] / GiB:.1f}", f"{f['xla_total'] / 1e12:.0f}",
             f"{f['analytic_total'] / 1e12:.0f}", "yes" if r["fits"] else "no", fix,
             f"{seconds:.0f} ({cpu_seconds:.0f})"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="B/16,L/16,H/14,g/14")
    p.add_argument("--meshes", default="8,64")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--device_memory", default="80GiB")
    args = p.parse_args()
    print(f"Global batch {args.batch}, 224x224, 1000 classes, f32, AdamW; memory GiB per device; "
          "TFLOPs per step (all devices).\n")
    print("| model | params | mesh | batch/device | params | opt state | temp | peak | "
          f"XLA TFLOPs | analytic TFLOPs | fits {args.device_memory}? | to fit (peak) | "
          "plan s wall (CPU) |")
    print("|" + "---|" * 13)
    for variant in args.variants.split(","):
        for fsdp in map(int, args.meshes.split(",")):
            print(row(*run(variant, fsdp, args.batch, args.device_memory)), flush=True)


if __name__ == "__main__":
    main()
