"""The PyTorch side of ``benchmarks/throughput.py``: timm ViTs on the same CPU, as JSON.

  .venv-peers/bin/python benchmarks/timm_peers.py '{"models": ["vit_tiny_patch16_224"],
                                                    "batch": 32, "repeats": 3}'

Runs in the interpreter that has torch + timm (``make bench-peers`` builds ``.venv-peers``; torch
is never a requirement of vit_jax). Imports neither jax nor vit_jax. Forward under
``torch.no_grad()`` in eval mode; the train step is cross-entropy forward + backward +
``torch.optim.AdamW`` step, as vit_jax's. f32, ``torch.set_num_threads(2)``. The last stdout line
is the JSON result.
"""

from __future__ import annotations

import json
import statistics
import sys

from timing import serve_loop, timed  # a sibling file: this runs as a script


def summarize(batch: int, wall: list[float], cpu: list[float]) -> dict:
    step = statistics.median(wall)
    return {"step_s": step, "all_s": wall, "cpu_s": statistics.median(cpu),
            "img_s": batch / step}


def measure(name: str, batch: int, repeats: int, image_size: int = 224) -> dict:
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000, img_size=image_size)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, 1000, (batch,))
    out = {"model": name, "batch": batch,
           "params": sum(p.numel() for p in model.parameters())}

    model.eval()

    def forward():
        with torch.no_grad():
            model(x)

    out["forward"] = summarize(batch, *timed(forward, repeats))

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    out["train"] = summarize(batch, *timed(train_step, repeats))
    print(f"[timm_peers] {name}: forward {out['forward']['img_s']:.1f} img/s, "
          f"train {out['train']['img_s']:.2f} img/s", file=sys.stderr, flush=True)
    return out


def build_steps(name: str, batch: int, image_size: int = 224) -> dict:
    """Inference and train-step callables of one timm model (the duel worker's steps)."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000, img_size=image_size)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, 1000, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return {"forward": forward, "train": train_step}


def serve(models: dict[str, str], batch: int, image_size: int = 224) -> None:
    """Duel worker (``benchmarks/duel.py``): ``models`` maps the vit_jax variant name to the
    timm model name; the same protocol as ``jax_measure.serve_loop``."""
    import timm
    import torch

    steps = {f"{variant}|{kind}": fn for variant, name in models.items()
             for kind, fn in build_steps(name, batch, image_size).items()}
    serve_loop(steps, {"torch": torch.__version__, "timm": timm.__version__,
                       "threads": torch.get_num_threads()})


def main() -> None:
    spec = json.loads(sys.argv[1])
    import timm
    import torch

    threads = int(spec.get("threads", 2))
    torch.set_num_threads(threads)
    if "serve" in spec:
        serve(**spec["serve"])
        return
    results = []
    for name in spec["models"]:
        try:
            results.append(measure(name, int(spec.get("batch", 32)), int(spec.get("repeats", 3)),
                                   int(spec.get("image_size", 224))))
        except Exception as e:  # noqa: BLE001 (report, keep the other models)
            results.append({"model": name, "error": f"{type(e).__name__}: {e}"})
    print(json.dumps({"torch": torch.__version__, "timm": timm.__version__, "threads": threads,
                      "results": results}), flush=True)


if __name__ == "__main__":
    main()
