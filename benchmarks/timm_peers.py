"""The PyTorch side of ``benchmarks/duel.py``: a worker timing timm ViTs step by step.

  .venv-peers/bin/python benchmarks/timm_peers.py \
      '{"threads": 2, "serve": {"models": {"Ti/16": "vit_tiny_patch16_224"}, "batch": 32}}'

Runs in the interpreter that has torch + timm (``make bench-peers`` builds ``.venv-peers``; torch
is never a requirement of vit_jax). Imports neither jax nor vit_jax. Forward under
``torch.no_grad()`` in eval mode; the train step is cross-entropy forward + backward +
``torch.optim.AdamW`` step, as vit_jax's. On CPU: f32, 2 threads; on a GPU (``device``): bf16
autocast, ``torch.compile`` and fused AdamW. Speaks ``timing.serve_loop``'s protocol.
"""

from __future__ import annotations

import json
import sys

from timing import serve_loop  # a sibling file: this runs as a script


def build_steps(name: str, batch: int, image_size: int = 224, *, device: str = "cpu",
                amp: bool = False, compile: bool = False,
                kinds: tuple[str, ...] = ("forward", "train")) -> dict:
    """Inference and train-step callables of one timm model (the duel worker's steps).

    On a GPU the peer is what a PyTorch user runs there: ``amp`` (bf16 autocast),
    ``compile`` (``torch.compile``, default mode) and a fused AdamW; each step ends with a
    device synchronisation, as vit_jax's ends with ``block_until_ready``.
    """
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000, img_size=image_size)
    model = model.to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05,
                            fused=device == "cuda")
    loss_fn = torch.nn.CrossEntropyLoss()
    run = torch.compile(model) if compile else model
    autocast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16,  # noqa: E731
                                      enabled=amp)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        model.eval()
        with torch.no_grad(), autocast():
            run(x)
        sync()

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(run(x), y)
        loss.backward()
        opt.step()
        sync()

    steps = {"forward": forward, "train": train_step}
    return {k: steps[k] for k in kinds}


def serve(models: dict[str, str], batch: int, image_size: int = 224, **options) -> None:
    """Duel worker (``benchmarks/duel.py``): ``models`` maps the vit_jax variant name to the
    timm model name; ``options`` go to ``build_steps`` (device, amp, compile, kinds)."""
    import timm
    import torch

    if "kinds" in options:
        options["kinds"] = tuple(options["kinds"])
    steps = {f"{variant}|{kind}": fn for variant, name in models.items()
             for kind, fn in build_steps(name, batch, image_size, **options).items()}
    serve_loop(steps, {"torch": torch.__version__, "timm": timm.__version__,
                       "threads": torch.get_num_threads(), **options})


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    serve(**spec["serve"])


if __name__ == "__main__":
    main()
