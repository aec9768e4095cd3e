"""The host input pipeline per CPU core, on ImageNet-style JPEGs.

  python -m benchmarks.input_pipeline [--images 400] [--peers]   # writes INPUT_PIPELINE.md

Synthesises JPEGs like ImageNet's typical photo (500×375, quality 90; ~70 KB of texture, a
little lighter than ImageNet's ~110 KB average: decoding cost follows pixels more than bytes) into
a scratch folder, then times ``decode|inception_crop(224)|flip_lr|value_range(-1,1)``:

- vit_jax's pp ops on each file's bytes, in one process pinned to one core (what one loader
  worker does per example): images/s per core;
- the same through vit_jax's whole loader (``data.name="folder"``, grain workers, batching)
  with ``workers`` processes: images/s over all cores, and per core;
- with ``--peers``, what a PyTorch user runs instead, pinned to one core in the peers
  interpreter (``benchmarks/duel.peers_python``): PIL decode, ``RandomResizedCrop(224)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``.

Single-core rates are medians of interleaved rounds (the machine's speed drifts); the cores a
GPU needs follow from the measured per-core rate and the GPU's train-step images/s
(benchmarks/RESULTS_GPU.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vit_jax.runtime import host_info

REPO = Path(__file__).resolve().parents[1]
PP = "decode|inception_crop(224)|flip_lr|value_range(-1,1)"
# big_vision's S/16 recipe (configs/recipes/vit_s16_i1k.py) adds RandAugment to the same chain
PP_RANDAUG = "decode|inception_crop(224)|flip_lr|randaug(2, 10)|value_range(-1,1)"
SIZE = (500, 375)  # (width, height): the most common ImageNet photo size
TARGET_PER_CORE = 400


def log(msg: str) -> None:
    print(f"[input_pipeline] {msg}", file=sys.stderr, flush=True)


def synthesize(root: Path, n: int, classes: int = 4, seed: int = 0) -> dict:
    """``n`` JPEGs in ``root/train/<class>/``: smooth colour fields, edges and fine texture, so
    that they compress (and decode) like photos rather than like noise or flat colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = SIZE
    sizes = []
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    for i in range(n):
        coarse = rng.standard_normal((6, 8, 3))
        field = np.asarray(Image.fromarray(((coarse - coarse.min()) / np.ptp(coarse) * 255)
                                           .astype(np.uint8)).resize((w, h), Image.BICUBIC),
                           np.float32)
        waves = sum(np.sin(2 * np.pi * (rng.uniform(2, 40) * xx * np.cos(a) +
                                        rng.uniform(2, 40) * yy * np.sin(a)))
                    for a in rng.uniform(0, np.pi, 4))[..., None] * 18
        texture = rng.standard_normal((h, w, 3)) * 9
        image = np.clip(field + waves + texture, 0, 255).astype(np.uint8)
        folder = root / "train" / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=90)
        (folder / f"{i:05d}.jpg").write_bytes(buf.getvalue())
        sizes.append(len(buf.getvalue()))
    return {"images": n, "size": list(SIZE), "quality": 90,
            "mean_kb": float(np.mean(sizes) / 1024)}


def files(root: Path) -> list[Path]:
    return sorted((root / "train").rglob("*.jpg"))


def pin_to_one_core() -> int:
    core = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {core})
    return core


# ----------------------------------------------------------------------------- workers


def ours_per_core(root: str, rounds: int, pin: bool = False, spec: str = PP) -> dict:
    """Images/s of vit_jax's pp ops ``spec`` in this process (no workers); ``pin``: first
    restrict the process to one core, as the benchmark's worker processes do."""
    core = pin_to_one_core() if pin else None
    from vit_jax.data import pp

    fn = pp.build(spec)
    data = [p.read_bytes() for p in files(Path(root))]
    rng = np.random.default_rng(0)
    for raw in data[:20]:
        fn({"image": raw, "label": 0}, rng)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for raw in data:
            out = fn({"image": raw, "label": 0}, rng)
        times.append(time.perf_counter() - t0)
    assert out["image"].shape == (224, 224, 3) and out["image"].dtype == np.float32
    return {"core": core, "img_s": len(data) / statistics.median(times),
            "all": [len(data) / t for t in times]}


TORCHVISION = """
import json, os, statistics, sys, time
core = sorted(os.sched_getaffinity(0))[-1]
os.sched_setaffinity(0, {core})
import torch
from PIL import Image
from torchvision import transforms as T
torch.set_num_threads(1)
paths, rounds = json.loads(sys.argv[1])
tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize([0.5] * 3, [0.5] * 3)])
def one(p):
    with open(p, "rb") as f, Image.open(f) as im:
        return tf(im.convert("RGB"))
for p in paths[:20]:
    one(p)
times = []
for _ in range(rounds):
    t0 = time.perf_counter()
    for p in paths:
        out = one(p)
    times.append(time.perf_counter() - t0)
assert tuple(out.shape) == (3, 224, 224)
import torchvision
print(json.dumps({"core": core, "img_s": len(paths) / statistics.median(times),
                  "all": [len(paths) / t for t in times], "torch": torch.__version__,
                  "torchvision": torchvision.__version__}))
"""


def loader_rate(root: str, workers: int, batch: int = 64, batches: int = 12,
                classes: int = 4) -> dict:
    """Images/s of vit_jax's whole loader (folder source, grain workers) after warm-up; the
    trainer's loader also makes the one-hot labels."""
    import ml_collections

    from vit_jax import data

    cfg = ml_collections.ConfigDict({"name": "folder", "root": root,
                                     "pp_train": f"{PP}|onehot({classes})", "workers": workers})
    it = data.build_train_iterator(cfg, batch_size=batch, seed=0)
    try:
        for _ in range(3):
            next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            b = next(it)
        elapsed = time.perf_counter() - t0
        shape = b["image"].shape
        del b  # its shared memory is released before the workers stop
    finally:
        it.close()
    assert shape == (batch, 224, 224, 3)
    return {"workers": workers, "img_s": batch * batches / elapsed}


def _subprocess_json(cmd: list[str], timeout: float = 900) -> dict:
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{cmd[:3]} failed (exit {r.returncode}); its error is above")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver


def measure(images: int, rounds: int, peers: bool, workers: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="jpegs_"))
    log(f"synthesising {images} JPEGs {SIZE[0]}x{SIZE[1]} q90 in {root}")
    result = {"pp": PP, "data": synthesize(root, images), "cores": len(os.sched_getaffinity(0)),
              "cpu": host_info().get("cpu", "?")}
    log(f"mean file {result['data']['mean_kb']:.0f} KB")
    def ours(spec: str) -> list[str]:
        return [sys.executable, "-m", "benchmarks.input_pipeline", "--worker",
                json.dumps({"root": str(root), "rounds": 1, "spec": spec})]

    single = {"vit_jax": ours(PP), "vit_jax_randaug": ours(PP_RANDAUG)}
    peer = None
    if peers:
        from benchmarks.duel import peers_python

        peer = peers_python()
        if peer is None:
            result["torchvision"] = {"skipped": "no interpreter with torch + torchvision"}
        else:
            single["torchvision"] = [peer, "-c", TORCHVISION,
                                     json.dumps([[str(p) for p in files(root)], 1])]
    rates = {k: [] for k in single}
    for r in range(rounds):  # interleaved, one round each at a time
        for name, cmd in single.items():
            rates[name].append(_subprocess_json(cmd)["img_s"])
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.0f} img/s/core"
                                                    for k, v in rates.items()))
    for name, values in rates.items():
        result[name] = {"img_s_per_core": statistics.median(values), "all": values}
    result["loader"] = loader_rate(str(root), workers)
    result["loader"]["img_s_per_core"] = result["loader"]["img_s"] / max(workers, 1)
    log(f"loader with {workers} workers: {result['loader']['img_s']:.0f} img/s")
    return result


def report(r: dict, gpu_img_s: float | None) -> str:
    ours = r["vit_jax"]["img_s_per_core"]
    lines = ["# Input pipeline per CPU core", "",
             f"`{r['pp']}` on {r['data']['images']} synthetic JPEGs "
             f"({r['data']['size'][0]}×{r['data']['size'][1]}, quality 90, "
             f"{r['data']['mean_kb']:.0f} KB on average); {r['cpu']}, {r['cores']} cores. "
             "Written by `python -m benchmarks.input_pipeline`.", "",
             "| pipeline | images/s per core | vs vit_jax |", "|---|---|---|",
             f"| vit_jax pp ops, one core | **{ours:.0f}** | 1.00× |"]
    ra = r.get("vit_jax_randaug", {})
    if "img_s_per_core" in ra:
        lines.append(f"| vit_jax pp ops + `randaug(2, 10)` (the S/16 recipe's), one core | "
                     f"{ra['img_s_per_core']:.0f} | {ra['img_s_per_core'] / ours:.2f}× |")
    tv = r.get("torchvision", {})
    if "img_s_per_core" in tv:
        lines.append(f"| torchvision (PIL decode, RandomResizedCrop, flip, ToTensor, Normalize), "
                     f"one core | {tv['img_s_per_core']:.0f} | "
                     f"{tv['img_s_per_core'] / ours:.2f}× |")
    elif tv:
        lines.append(f"| torchvision | {tv['skipped']} | |")
    ld = r["loader"]
    lines.append(f"| vit_jax loader, {ld['workers']} grain workers, batches of 64 | "
                 f"{ld['img_s_per_core']:.0f} ({ld['img_s']:.0f} in all) | "
                 f"{ld['img_s_per_core'] / ours:.2f}× |")
    lines += ["", f"Target: ≥ {TARGET_PER_CORE} images/s per core: "
              f"{'met' if ours >= TARGET_PER_CORE else '**not met**'} ({ours:.0f})."]
    if gpu_img_s:
        lines.append(f"Feeding B/16's train step on one H200 ({gpu_img_s:,.0f} img/s, "
                     f"benchmarks/RESULTS_GPU.md) takes ~{gpu_img_s / ours:.0f} cores at the pp "
                     f"ops' rate, ~{gpu_img_s / ld['img_s_per_core']:.0f} at the whole "
                     "loader's rate per core measured here (on this 2-core machine the loader's "
                     "main process, batching and inter-process copies share the cores with "
                     "its two workers).")
    return "\n".join(lines) + "\n"


def _gpu_b16() -> float | None:
    path = REPO / "benchmarks" / "RESULTS_GPU.json"
    try:
        return json.loads(path.read_text())["sections"]["speed"]["B/16"]["train"]["img_s"]
    except (OSError, KeyError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--peers", action="store_true", help="also torchvision, one core")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "INPUT_PIPELINE.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(ours_per_core(**json.loads(args.worker), pin=True)))
        return
    if args.images < 20 or args.rounds < 1 or args.workers < 0:
        p.error("need --images >= 20, --rounds >= 1, --workers >= 0")
    r = measure(args.images, args.rounds, args.peers, args.workers)
    args.out.write_text(report(r, _gpu_b16()))
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=1))
    print(report(r, _gpu_b16()))


if __name__ == "__main__":
    main()
