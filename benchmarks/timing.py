"""Timing helpers shared by the JAX and PyTorch benchmark workers (stdlib only: the timm worker
runs in another interpreter, without jax or vit_jax)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


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
