"""Where a train step's time goes on XLA:CPU, by kind of operation.

  python -m benchmarks.step_profile --variant Ti/16 --dtypes float32,bfloat16

Runs the real train step (``make_train_step``, AdamW, donation, as ``jax_measure``) under
``jax.profiler``, reads the trace's per-operation events (XLA:CPU's thunks), finds each one's
HLO instruction in the compiled step and sorts the time into kinds: matmuls (by the library that
runs them: XLA:CPU hands fused matmuls to YNNPACK, the rest to Eigen), convolutions, dtype
conversions, layout copies and transposes, tree reductions (``reduce-window``), other
reductions and elementwise work. Matmul rows carry their GFLOP/s (FLOPs counted from the HLO's
dot shapes), to set against the machine's matmul peak, except Eigen's: XLA:CPU runs a large
Eigen matmul asynchronously, its event ends before its work does, and that work shows up in the
time of the operations running beside it (the sum of all events stays close to the step's wall
time, also printed). This is how the bf16 step on an AMX Xeon was found to lose its matmul gain
to conversions (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import re
import statistics
import sys
import tempfile
import time
from typing import Any, NamedTuple

EIGEN = "matmul (Eigen; asynchronous, time under-counted)"
KINDS = ("matmul (YNNPACK)", EIGEN, "convolution", "dtype conversion",
         "layout copy / transpose", "tree reduction (reduce-window)", "reduction", "elementwise")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$")
_SHAPE = re.compile(r"^\w+\[([\d,]*)\]")


def log(msg: str) -> None:
    print(f"[step_profile] {msg}", file=sys.stderr, flush=True)


class Instr(NamedTuple):
    """One HLO instruction line, parsed once: its name, result shape, opcode, the text after
    the opening parenthesis, and the computation it belongs to."""
    name: str
    shape: str
    opcode: str
    rest: str
    home: str


def parse_hlo(text: str) -> tuple[dict[str, list[Instr]], dict[str, Instr]]:
    """The compiled module's computations (name -> instructions) and its instructions by name."""
    computations: dict[str, list[Instr]] = {}
    instructions: dict[str, Instr] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            computations[current] = []
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            instr = Instr(*m.groups(), home=current)
            computations[current].append(instr)
            instructions.setdefault(instr.name, instr)
    return computations, instructions


def _dims(shape: str) -> list[int]:
    m = _SHAPE.match(shape)
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def _dot_flops(dot: Instr, shapes: dict[str, str]) -> float:
    """2·(output elements)·(contracted size) of one ``dot``; ``shapes``: its computation's
    instruction shapes (the lhs is named there)."""
    lhs = dot.rest.split(",")[0].strip().split(" ")[-1].lstrip("%")
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", dot.rest)
    lhs_dims = _dims(shapes.get(lhs, ""))
    if not contracting or not lhs_dims:
        return 0.0
    k = math.prod(lhs_dims[int(i)] for i in contracting.group(1).split(",") if i)
    return 2.0 * math.prod(_dims(dot.shape)) * k


def classify(name: str, computations, instructions) -> tuple[str, float]:
    """(kind, matmul FLOPs) of the thunk named ``name``."""
    if name not in instructions:
        return "elementwise", 0.0
    instr = instructions[name]
    called = re.search(r"calls=%?([\w.\-]+)", instr.rest)
    if called and called.group(1) in computations:  # a fusion: look inside it
        members = computations[called.group(1)]
    else:  # a lone instruction: its operands are named in its own computation
        members = [instr]
    shapes = {i.name: i.shape for i in computations[members[0].home]}
    ops = {i.opcode for i in members}
    if "dot" in ops:
        flops = sum(_dot_flops(i, shapes) for i in members if i.opcode == "dot")
        return ("matmul (YNNPACK)" if name.startswith("ynn") else EIGEN), flops
    if "convolution" in ops:
        return "convolution", 0.0
    if "reduce-window" in ops:
        return "tree reduction (reduce-window)", 0.0
    if "convert" in ops:
        return "dtype conversion", 0.0
    if ops & {"copy", "transpose"}:
        return "layout copy / transpose", 0.0
    if "reduce" in ops:
        return "reduction", 0.0
    return "elementwise", 0.0


def thunk_times(trace_dir: str) -> dict[str, float]:
    """Total microseconds per XLA:CPU operation in the perfetto trace under ``trace_dir``."""
    path = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    skip = ("$", "ThunkExecutor", "SlinkyThreadPool", "PjitFunction", "CommonPjRt",
            "ParseArguments")
    totals: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(skip):
            totals[e["name"]] += e.get("dur", 0)
    return totals


def profile(variant: str, dtype: str, batch: int = 32, image_size: int = 224,
            steps: int = 3) -> dict[str, Any]:
    """ms per step and GFLOP/s of each kind of operation in ``variant``'s train step."""
    import jax

    from benchmarks.jax_measure import _build, _compile_train

    _, graphdef, state, data = _build(variant, batch=batch, image_size=image_size,
                                      overrides={"dtype": dtype}, abstract=False)
    compiled, rng, _ = _compile_train(graphdef, state, data)
    for _ in range(2):  # warm-up: first-run allocations stay out of the trace
        state, metrics = compiled(state, data, rng)
        jax.block_until_ready((state, metrics))
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(steps):
                state, metrics = compiled(state, data, rng)
                jax.block_until_ready((state, metrics))
        times = thunk_times(trace_dir)
    walls = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, data, rng)
        jax.block_until_ready((state, metrics))
        walls.append(time.perf_counter() - t0)
    wall_ms = statistics.median(walls) * 1e3
    computations, instructions = parse_hlo(compiled.as_text())
    kinds = {k: {"ms": 0.0, "flops": 0.0, "ops": 0} for k in KINDS}
    for name, us in times.items():
        kind, flops = classify(name, computations, instructions)
        kinds[kind]["ms"] += us / 1e3 / steps
        kinds[kind]["flops"] += flops
        kinds[kind]["ops"] += 1
    total = sum(k["ms"] for k in kinds.values())
    for k in kinds.values():
        k["share"] = k["ms"] / total if total else 0.0
        k["gflop_s"] = k["flops"] / (k["ms"] / 1e3) / 1e9 if k["flops"] and k["ms"] else None
    kinds[EIGEN]["gflop_s"] = None  # its events end before its work (module docstring)
    return {"variant": variant, "dtype": dtype, "batch": batch, "image_size": image_size,
            "steps": steps, "total_ms": total, "wall_ms": wall_ms, "kinds": kinds}


def table(results: list[dict]) -> str:
    head = "| kind | " + " | ".join(
        f"{r['dtype']}: ms/step (share) | GFLOP/s" for r in results) + " |"
    lines = [head, "|---|" + "---|---|" * len(results)]
    for kind in KINDS:
        cells = []
        for r in results:
            k = r["kinds"][kind]
            rate = f"{k['gflop_s']:.0f}" if k["gflop_s"] else ""
            cells.append(f"{k['ms']:.0f} ({k['share']:.0%}) | {rate}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("| **all operations** | " + " | ".join(
        f"**{r['total_ms']:.0f}** | " for r in results) + " |")
    lines.append("| step wall time, untraced (median) | " + " | ".join(
        f"{r['wall_ms']:.0f} | " for r in results) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from vit_jax.runtime import configure_runtime

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="Ti/16")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    dtypes = args.dtypes.split(",")
    bad = [d for d in dtypes if d not in ("float32", "bfloat16")]
    if bad:
        p.error(f"--dtypes: {bad} not valid; choose from float32, bfloat16")
    for flag, value in (("--batch", args.batch), ("--image-size", args.image_size),
                        ("--steps", args.steps)):
        if value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    from vit_jax.models.variants import parse_variant

    try:
        parse_variant(args.variant)
    except ValueError as e:
        p.error(f"--variant: {e}")
    configure_runtime()
    results = []
    for dtype in dtypes:
        log(f"{args.variant} {dtype}: compiling and tracing {args.steps} steps")
        results.append(profile(args.variant, dtype, args.batch, args.image_size, args.steps))
    print(table(results))


if __name__ == "__main__":
    main()
