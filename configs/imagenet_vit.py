"""ViT pretraining on ImageNet-1k, in the spirit of big_vision's `vit_i1k` recipe.

  python -m vit_jax.main --config=configs/imagenet_vit.py:B/16 --workdir=runs/i1k_b16 \
      --config.data.data_dir=/path/to/tensorflow_datasets --config.mesh.fsdp=8

Needs `imagenet2012` prepared by TFDS in `data_dir` (nothing is downloaded). big_vision's recipe:
batch 4096, 90 or 300 epochs, AdamW lr 1e-3 with decoupled wd 1e-4 (per step: optax's
``weight_decay`` is multiplied by the lr, so it is 0.1 here), 10k warmup steps, cosine,
global-norm clip 1.0, sincos2d posemb, global average pooling, inception crop + flip, mixup 0.2.
With fewer accelerators keep the global batch and raise `--config.optim.grad_accum_steps`.
"""

from vit_jax.config import base_config, model_config

IMAGES = 1_281_167


def get_config(arg: str | None = None):
    variant, _, epochs = (arg or "B/16").partition(",")
    epochs = int(epochs or 90)
    c = base_config()
    c.batch_size = 4096
    c.total_steps = epochs * IMAGES // c.batch_size
    c.data.name = "tfds:imagenet2012"
    c.data.eval_split = "validation"
    c.data.pp_train = "decode|inception_crop(224)|flip_lr|value_range(-1,1)|onehot(1000)"
    c.data.pp_eval = "decode|resize_small(256)|central_crop(224)|value_range(-1,1)|onehot(1000)"
    c.data.mixup_alpha = 0.2
    c.data.workers = 8
    c.model = model_config(variant, image_size=224, pool="gap", class_token=False,
                           posemb="sincos2d", scan=True, remat_policy="dots_no_batch")
    # big_vision's wd=1e-4 decays by wd x schedule per step; optax's AdamW by lr x weight_decay
    c.optim.update(name="adamw", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.1,
                   schedule="cosine", warmup_steps=10_000, grad_clip_norm=1.0)
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 50
    c.eval_batch_size = 1024
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
