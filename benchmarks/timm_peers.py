"""The PyTorch side of ``benchmarks/duel.py``: a worker timing timm ViTs step by step.

  .venv-peers/bin/python benchmarks/timm_peers.py \
      '{"threads": 2, "serve": {"models": {"Ti/16": "vit_tiny_patch16_224"}, "batch": 32}}'

Runs in the interpreter that has torch + timm (``make bench-peers`` builds ``.venv-peers``; torch
is never a requirement of vit_jax). Imports neither jax nor vit_jax. Forward under
``torch.no_grad()`` in eval mode; the train step is cross-entropy forward + backward +
``torch.optim.AdamW`` step, as vit_jax's. f32, 2 threads. Speaks ``timing.serve_loop``'s protocol.
"""

from __future__ import annotations

import json
import sys

from timing import serve_loop  # a sibling file: this runs as a script


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
    timm model name."""
    import timm
    import torch

    steps = {f"{variant}|{kind}": fn for variant, name in models.items()
             for kind, fn in build_steps(name, batch, image_size).items()}
    serve_loop(steps, {"torch": torch.__version__, "timm": timm.__version__,
                       "threads": torch.get_num_threads()})


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    serve(**spec["serve"])


if __name__ == "__main__":
    main()
