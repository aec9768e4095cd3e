"""Timing helpers shared by the JAX and PyTorch benchmark workers (stdlib only: the timm worker
runs in another interpreter, without jax or vit_jax)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(fn: Callable[[], object], repeats: int,
          warmup: int = 1) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of each of ``repeats`` calls of ``fn`` (which blocks).

    CPU seconds (all threads) are the fairer measure on a shared machine: other jobs stretch
    the wall time, far less the CPU time a step needs.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def serve_loop(steps: dict[str, Callable[[], object]], info: dict) -> None:
    """The duel worker protocol (``benchmarks/duel.py``): warm every step up, print
    ``{"ready": [keys], **info}``, then answer each stdin line ``{"run": key, "n": k}`` with the
    wall and CPU seconds of ``k`` calls; ``{"quit": true}`` or EOF ends."""
    for fn in steps.values():
        fn()
    print(json.dumps({"ready": sorted(steps), **info}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        wall, cpu = timed(steps[cmd["run"]], int(cmd.get("n", 1)), warmup=0)
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def host_info() -> dict[str, Any]:
    """CPU model and the ISA flags that matter for XLA:CPU, GPU name and driver."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        for line in cpuinfo.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["isa"] = sorted(f for f in flags if f.startswith(("avx512", "amx"))
                                     or f in ("avx2", "fma"))
                break
    except OSError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
        if smi.returncode == 0:
            info["gpu"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info
