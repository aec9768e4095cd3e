"""ViT from scratch on CIFAR-10 (a TFDS dataset you have prepared; nothing is downloaded).

  python -m vit_jax.main --config=configs/cifar10.py:S/4 --workdir=runs/cifar10 \
      --config.data.data_dir=/path/to/tensorflow_datasets

The argument is the variant (default S/4: 64 tokens at 32x32). Recipe in the spirit of DeiT /
big_vision small-data runs: AdamW, warmup + cosine, label smoothing, mixup, random crop + flip.
"""

from vit_jax.config import base_config, model_config


def get_config(arg: str | None = None):
    variant = arg or "S/4"
    c = base_config()
    c.batch_size = 512
    c.total_steps = 300 * 50_000 // 512  # 300 epochs
    c.data.name = "tfds:cifar10"
    c.data.pp_train = ("decode|random_crop(32, pad=4)|flip_lr|value_range(-1,1)"
                       "|onehot(10, label_smoothing=0.1)")
    c.data.pp_eval = "decode|value_range(-1,1)|onehot(10)"
    c.data.mixup_alpha = 0.2
    c.data.workers = 4
    c.model = model_config(variant, image_size=32, pool="gap", class_token=False,
                           posemb="learn", drop_path=0.1)
    c.optim.update(name="adamw", lr=1e-3, b2=0.999, weight_decay=0.05, schedule="cosine",
                   warmup_steps=10 * 50_000 // 512, grad_clip_norm=1.0)
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 100
    c.eval_batch_size = 1000
    return c
