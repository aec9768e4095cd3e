"""Packed (NaViT) vs padded training on images of mixed sizes and aspect ratios.

  python -m benchmarks.packing [--rounds 7] [--steps 3]      # writes PACKING.md / PACKING.json

The data: a mock ``imagenet2012`` (``vit_jax.data.mock_imagenet``: JPEGs of random heights and
widths, 48-160 px, so random aspect ratios) through ``resize_native(16, 64, multiple=8)``: each
image keeps its aspect ratio, its longer side drawn in 16-64 px, so it holds 2-64 patches of 8×8.
Both arms train the same ViT (width 192, depth 6, patch 8, ``sincos2d``, ``gap``) with the
same step budget of 2,048 token slots:

- **padded**: one image per sequence, each padded to the largest grid (64 tokens), 32 sequences:
  what big_vision's NaFlex and a fixed-size pipeline do;
- **packed**: sequences of 256 tokens holding up to 16 images each, 8 sequences.

Measured: the jitted train step (interleaved rounds, medians; the batches are made beforehand,
so the host's packing is timed apart), useful (non-padding) tokens and images per step, and from
them useful tokens/s and images/s. Targets (issue 14): useful tokens/s ≥ 1.5× padding's, padding
≤ 10%. The host cost of making a packed batch (pp + packing, one process) is reported per image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.jax_measure import interleaved

REPO = Path(__file__).resolve().parents[1]
PATCH = 8
PP = f"decode|resize_native(16, 64, multiple={PATCH})|value_range(-1,1)|onehot(1000)"
ARMS = {"padded": dict(seq_len=64, max_images=1, sequences=32),
        "packed": dict(seq_len=256, max_images=16, sequences=8)}
MODEL = dict(width=192, depth=6, num_heads=3, mlp_dim=768, patch_size=PATCH, image_size=64,
             posemb="sincos2d", pool="gap", class_token=False, head_zero_init=False)
TARGET_RATIO, TARGET_PADDING = 1.5, 0.10


def log(msg: str) -> None:
    print(f"[packing] {msg}", file=sys.stderr, flush=True)


def arm_batches(data_dir: str, arm: dict, count: int) -> tuple[list[dict], float]:
    """``count`` packed batches of an arm and the host seconds per image it took to make them."""
    from vit_jax import data

    cfg = dict(name="tfds:imagenet2012", data_dir=data_dir, eval_split="validation",
               pp_train=PP, pp_eval=PP, packing=dict(seq_len=arm["seq_len"], patch_size=PATCH,
                                                     max_images=arm["max_images"]))
    it = data.build_train_iterator(cfg, batch_size=arm["sequences"], seed=0)
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(count)]
    images = sum(int(b["image_mask"].sum()) for b in batches)
    return batches, (time.perf_counter() - t0) / images


def arm_step(batches: list[dict], steps: int, model: dict):
    """A callable running ``steps`` train steps over the arm's batches (blocking)."""
    import jax
    from flax import nnx

    from vit_jax import train_state
    from vit_jax.models import create_model
    from vit_jax.packing import MODEL_KEYS

    create = train_state.state_factory(
        lambda: create_model("mu/8", num_classes=1000, **model),
        dict(name="adamw", lr=1e-3, schedule="constant", total_steps=10_000))
    graphdef, state = nnx.split(create())
    step = jax.jit(train_state.train_step(graphdef, dict(name="adamw", lr=1e-3,
                                                         schedule="constant",
                                                         total_steps=10_000)),
                   donate_argnums=0)
    keys = (*MODEL_KEYS, "labels")
    device_batches = [jax.device_put({k: b[k] for k in keys if k in b}) for b in batches]
    rng = jax.random.PRNGKey(0)
    holder = {"state": state, "i": 0}

    def run():
        for _ in range(steps):
            batch = device_batches[holder["i"] % len(device_batches)]
            holder["i"] += 1
            holder["state"], metrics = step(holder["state"], batch, rng)
        jax.block_until_ready(metrics["train/loss"])

    return run


def measure(rounds: int, steps: int, batches_per_arm: int = 6, model: dict = MODEL,
            train_images: int = 600) -> dict:
    from vit_jax.data.mock_imagenet import write_mock_imagenet

    data_dir = tempfile.mkdtemp(prefix="mock_imagenet_")
    write_mock_imagenet(data_dir, train=train_images, validation=8, sizes=(48, 160))
    result = {"pp": PP, "model": model, "arms": {}}
    runs = {}
    for name, arm in ARMS.items():
        batches, host_s = arm_batches(data_dir, arm, batches_per_arm)
        useful = [int((b["segment_ids"] > 0).sum()) for b in batches]
        images = [int(b["image_mask"].sum()) for b in batches]
        slots = arm["seq_len"] * arm["sequences"]
        result["arms"][name] = {**arm, "token_slots": slots,
                                "useful_tokens": statistics.mean(useful),
                                "images": statistics.mean(images),
                                "padding": 1 - statistics.mean(useful) / slots,
                                "host_ms_per_image": 1e3 * host_s}
        runs[name] = arm_step(batches, steps, model)
        log(f"{name}: {statistics.mean(images):.1f} images, "
            f"{result['arms'][name]['padding']:.1%} padding per step")
    times = interleaved(runs, rounds)
    for name, (wall, _) in times.items():
        r = result["arms"][name]
        r["step_s"] = statistics.median(wall) / steps
        r["all_step_s"] = [w / steps for w in wall]
        r["useful_tokens_s"] = r["useful_tokens"] / r["step_s"]
        r["images_s"] = r["images"] / r["step_s"]
    padded, packed = result["arms"]["padded"], result["arms"]["packed"]
    result["ratio_useful_tokens_s"] = packed["useful_tokens_s"] / padded["useful_tokens_s"]
    result["ratio_images_s"] = packed["images_s"] / padded["images_s"]
    return result


def report(r: dict, host: str) -> str:
    lines = ["# Packed vs padded training (NaViT)", "",
             f"Images of random sizes and aspect ratios (mock ImageNet JPEGs, 48-160 px) through "
             f"`{r['pp']}`; a ViT of width {r['model']['width']}, depth {r['model']['depth']}, "
             f"patch {PATCH}, on {host}. Written by `python -m benchmarks.packing`.", "",
             "| arm | sequences × tokens (images per sequence) | images per step | padding | "
             "step (ms) | useful tokens/s | images/s | host ms per image |",
             "|---|---|---|---|---|---|---|---|"]
    for name, a in r["arms"].items():
        lines.append(f"| {name} | {a['sequences']} × {a['seq_len']} (≤ {a['max_images']}) | "
                     f"{a['images']:.1f} | {a['padding']:.1%} | {1e3 * a['step_s']:.0f} | "
                     f"{a['useful_tokens_s']:,.0f} | {a['images_s']:.1f} | "
                     f"{a['host_ms_per_image']:.2f} |")
    ratio, padding = r["ratio_useful_tokens_s"], r["arms"]["packed"]["padding"]
    lines += ["", f"Packed / padded: **{ratio:.2f}×** useful tokens/s, "
              f"{r['ratio_images_s']:.2f}× images/s (medians of interleaved rounds).", "",
              f"- useful tokens/s ≥ {TARGET_RATIO}× padding's: "
              f"{'met' if ratio >= TARGET_RATIO else '**not met**'} ({ratio:.2f}×)",
              f"- packed padding ≤ {TARGET_PADDING:.0%}: "
              f"{'met' if padding <= TARGET_PADDING else '**not met**'} ({padding:.1%})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="train steps per timed call")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "PACKING.md")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        p.error("need --rounds >= 1 and --steps >= 1")
    from vit_jax.runtime import host_info

    r = measure(args.rounds, args.steps)
    host = f"{host_info().get('cpu', '?')}"
    args.out.write_text(report(r, host))
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=1))
    print(report(r, host))


if __name__ == "__main__":
    main()
