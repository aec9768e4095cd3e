"""Fine-tuning at a new resolution: the original ViT transfer recipe, on the embedded shapes data.

  python -m vit_jax.main --config=configs/finetune.py --workdir=runs/finetune \
      --config.init_from=runs/quickstart --config.image_size=48

`init_from` is a training workdir (default `runs/quickstart`, so `make train` first), one of its
`checkpoints/<step>` dirs, a converted `.npz`, a Google `.npz` or a timm `.safetensors` file.
`image_size` sets the model and the pp `resize` together; the run's checkpoints record it, so
`vit_jax.load_model(workdir)` gives the model at the new resolution. At the start, positions are
resampled to the new grid and the head is replaced by a zero one when the class count differs
(the summary is printed). `config.model` must describe the checkpoint's architecture (default:
quickstart's ViT); a mismatch is an error naming the `--config.model.*` values to set.

Recipe (Dosovitskiy et al. 2021, appendix B.1.1): SGD with momentum 0.9, no weight decay, a low
learning rate with linear warmup then cosine, gradient clipping at global norm 1.
"""

from vit_jax.config import base_config, model_config


def get_config(arg: str | None = None):
    c = base_config()
    c.init_from = "runs/quickstart"
    c.image_size = 48  # model.image_size and the pp resize follow it
    size = c.get_ref("image_size")
    c.total_steps = 200
    c.batch_size = 128
    c.data.name = "shapes"
    c.data.shapes = dict(image_size=32, num_train=10_000, num_test=2_000, seed=0)
    c.data.pp_train = "decode|resize(" + size.to_str() + ")|flip_lr|value_range(-1,1)|onehot(6)"
    c.data.pp_eval = "decode|resize(" + size.to_str() + ")|value_range(-1,1)|onehot(6)"
    c.model = model_config("Ti/4", image_size=size, width=128, depth=6, num_heads=4, mlp_dim=512)
    c.optim.update(name="sgd", momentum=0.9, lr=0.01, weight_decay=0.0, schedule="cosine",
                   warmup_steps=20, grad_clip_norm=1.0)
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 100
    c.log_every_steps = 20
    return c
