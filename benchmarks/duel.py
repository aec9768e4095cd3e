"""vit_jax against timm, step for step: two live worker processes that take turns.

  python -m benchmarks.duel [--variants Ti/16,S/16] [--batch 32] [--rounds 9]

Why: on our shared 2-core VMs the speed of the same step drifts by 10-20% over minutes (a
steady 26 img/s becomes 22 for a while, at the same CPU use), so timing vit_jax and then timm
minutes later can turn a 1.3x lead into 1.1x or 1.5x. Here both workers compile first, then
each round runs one step of vit_jax and one of timm back to back (the order alternating by
round), so both see the same machine. The ratio is the median over rounds of the per-round
time ratio; images/s are medians too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMM_NAMES = {"Ti/16": "vit_tiny_patch16_224", "S/16": "vit_small_patch16_224",
              "B/16": "vit_base_patch16_224", "L/16": "vit_large_patch16_224"}
KINDS = ("forward", "train")
DTYPES = ("float32", "bfloat16")
PEERS_ENV = "VIT_JAX_PEERS_PYTHON"
PAUSE_S = 0.3  # lets the other worker's spinning pool threads go idle before a step


class Worker:
    """A benchmark worker process speaking ``benchmarks.timing.serve_loop``'s protocol."""

    def __init__(self, name: str, cmd: list[str], env: dict | None = None):
        self.name = name
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.info: dict = {}

    def wait_ready(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker exited (code {self.proc.wait()}) before "
                               "it was ready; its error is above")
        self.info = json.loads(line)
        return self.info

    def run(self, key: str, n: int = 1) -> dict:
        self.proc.stdin.write(json.dumps({"run": key, "n": n}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died running {key}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()


def log(msg: str) -> None:
    print(f"[duel] {msg}", file=sys.stderr, flush=True)


def peers_python() -> str | None:
    """An interpreter with torch + timm: $VIT_JAX_PEERS_PYTHON, .venv-peers, or this one."""
    candidates = [os.environ.get(PEERS_ENV), str(REPO / ".venv-peers" / "bin" / "python")]
    for exe in filter(None, candidates):
        if Path(exe).exists():
            return exe
    if importlib.util.find_spec("timm") and importlib.util.find_spec("torch"):
        return sys.executable
    return None


def duel(variants: list[str], batch: int = 32, rounds: int = 9, image_size: int = 224,
         python: str | None = None, *, kinds: tuple[str, ...] = KINDS,
         steps_per_round: int = 1, gpu: bool = False, dtype: str = "float32") -> dict:
    """Per variant and kind: vit_jax and timm images/s (medians) and the median per-round
    ratio vit_jax/timm (> 1: vit_jax is faster), with its spread. Each variant gets its own
    pair of workers, so each process holds one model, as a training job does (a process
    holding several compiled models ran its steps up to 20% slower, timm's less so).

    ``gpu``: both on the GPU, timm as a PyTorch user runs it there (bf16 autocast,
    ``torch.compile``, fused AdamW), vit_jax's default path (bf16, auto attention) limited to
    45% of the GPU's memory so that the two fit side by side. ``dtype="bfloat16"`` on the
    CPU: both compute in bf16 (vit_jax ``dtype="bfloat16"``, timm under bf16 autocast),
    parameters float32 in both. A round times
    ``steps_per_round`` steps of each and takes their mean."""
    exe = python or peers_python()
    if exe is None:
        raise RuntimeError("torch + timm not found: `make bench-peers` installs them into "
                           ".venv-peers (or set VIT_JAX_PEERS_PYTHON)")
    check_request(variants, dtype)
    rows, info = [], {}
    for variant in variants:
        times, info = _duel_one(variant, batch, rounds, image_size, exe, kinds,
                                steps_per_round, gpu, dtype)
        for k in kinds:
            ours, theirs = times[(k, "vit_jax")], times[(k, "timm")]
            ratios = sorted(t / o for o, t in zip(ours, theirs, strict=True))
            rows.append({"variant": variant, "kind": k, "timm_model": TIMM_NAMES[variant],
                         "vit_jax_img_s": batch / statistics.median(ours),
                         "timm_img_s": batch / statistics.median(theirs),
                         "ratio": statistics.median(ratios), "ratio_min": ratios[0],
                         "ratio_max": ratios[-1], "vit_jax_s": ours, "timm_s": theirs})
    return {"batch": batch, "rounds": rounds, "steps_per_round": steps_per_round,
            "image_size": image_size, "gpu": gpu, "dtype": dtype, "rows": rows,
            "workers": info}


def check_request(variants: list[str], dtype: str) -> None:
    """ValueError naming what is wrong, before any worker starts."""
    if unknown := [v for v in variants if v not in TIMM_NAMES]:
        raise ValueError(f"no timm peer for {unknown}; peers exist for {list(TIMM_NAMES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: valid are {DTYPES}")


def _duel_one(variant: str, batch: int, rounds: int, image_size: int, exe: str,
              kinds: tuple[str, ...], steps_per_round: int, gpu: bool,
              dtype: str = "float32") -> tuple[dict, dict]:
    """Step times {(kind, worker): [seconds per round]} of one variant, and the workers' info."""
    spec = {"variants": [variant], "batch": batch, "image_size": image_size,
            "kinds": list(kinds)}
    timm_spec = {"models": {variant: TIMM_NAMES[variant]}, "batch": batch,
                 "image_size": image_size, "kinds": list(kinds)}
    if dtype == "bfloat16" and not gpu:
        spec["overrides"] = {"dtype": "bfloat16"}
        timm_spec["amp"] = True
    if gpu:
        timm_spec.update(device="cuda", amp=True, compile=True)
    jax_env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"} if gpu else {}
    workers = {}
    try:
        # One at a time: compiling while the other one warms up would slow both.
        log(f"{variant}: starting the vit_jax worker (batch {batch})")
        workers["vit_jax"] = Worker("vit_jax", [sys.executable, "-m", "benchmarks.jax_measure",
                                                json.dumps({"serve": spec})], jax_env)
        workers["vit_jax"].wait_ready()
        log(f"{variant}: starting the timm worker ({exe})")
        workers["timm"] = Worker("timm", [exe, str(REPO / "benchmarks" / "timm_peers.py"),
                                          json.dumps({"threads": None if gpu else 2,
                                                      "serve": timm_spec})])
        workers["timm"].wait_ready()
        times = {(k, w): [] for k in kinds for w in workers}
        t0 = time.time()
        for r in range(rounds):
            order = ["vit_jax", "timm"] if r % 2 == 0 else ["timm", "vit_jax"]
            for k in kinds:
                for w in order:
                    time.sleep(PAUSE_S)
                    wall = workers[w].run(f"{variant}|{k}", steps_per_round)["wall"]
                    times[(k, w)].append(sum(wall) / len(wall))
            done = r + 1
            eta = (time.time() - t0) / done * (rounds - done)
            log(f"{variant}: round {done}/{rounds} ({time.time() - t0:.0f} s, ETA {eta:.0f} s)")
        return times, {name: w.info for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()


def table(result: dict) -> str:
    lines = ["| model | step | vit_jax img/s | timm img/s | vit_jax / timm (median of rounds) "
             "| range over rounds |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} ({r['timm_model']}) | {r['kind']} | "
                     f"{r['vit_jax_img_s']:.1f} | {r['timm_img_s']:.1f} | **{r['ratio']:.2f}×** "
                     f"| {r['ratio_min']:.2f}–{r['ratio_max']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="Ti/16,S/16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="compute dtype of both (bfloat16: vit_jax dtype=bfloat16 against timm "
                        "under bf16 autocast; parameters float32 in both)")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    try:
        check_request(variants, args.dtype)
    except ValueError as e:
        p.error(f"--variants: {e}")
    for flag, value in (("--batch", args.batch), ("--rounds", args.rounds),
                        ("--image-size", args.image_size)):
        if value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    result = duel(variants, args.batch, args.rounds, args.image_size, dtype=args.dtype)
    print(table(result))


if __name__ == "__main__":
    main()
