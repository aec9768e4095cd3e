"""DeiT without distillation: ViT-Ti/S/B on ImageNet-1k from scratch (Touvron et al. 2021).

  python -m vit_jax.main --config=configs/recipes/deit.py:S --workdir=runs/deit_s \
      --config.data.data_dir=/path/to/tensorflow_datasets

The argument is the model: Ti, S or B (patch 16, 224²); the paper reports 72.2 / 79.8 / 81.8%
top-1 on ImageNet validation after 300 epochs (its Table 1, no distillation token). Needs
``imagenet2012`` prepared by TFDS in ``data_dir`` (``python -m vit_jax.data.mock_imagenet DIR``
writes a mock to try the path).

Every hyperparameter of DeiT's ``main.py`` defaults (the paper's Table 9):
- data: the whole train split, batch 1024, 300 epochs; inception crop to 224 (area 8-100%,
  aspect 3/4-4/3, bicubic), flip, RandAugment ``rand-m9-mstd0.5-inc1``, ImageNet's mean and
  std, random erasing 0.25 (per-pixel noise), repeated augmentation ×3, mixup 0.8 and CutMix
  1.0 (one or the other per step), label smoothing 0.1; eval: short side to 256 (crop ratio
  0.875, bicubic), central 224;
- model: class token, learned positions, stochastic depth 0.1, no dropout;
- optimizer: AdamW lr 5e-4 × 1024/512 = 1e-3, weight decay 0.05 (PyTorch's AdamW multiplies it
  by the lr, as optax does), eps 1e-8, 5 warmup epochs, cosine to 1e-5, no gradient clipping, no
  weight average (the paper found no gain from one).

Where this differs from DeiT's code (none expected to move the number): the head starts from
Xavier-uniform instead of a truncated normal of std 0.02; RandAugment's geometric ops fill with
grey 128 instead of the mean colour; warmup starts from 0 instead of 1e-6.
"""

from vit_jax.config import imagenet_config, model_config

TRAIN_IMAGES = 1_281_167  # ImageNet-1k's train split, all of it (DeiT holds nothing out)
BATCH = 1024
EPOCHS = 300
MODELS = {"Ti": "Ti/16", "S": "S/16", "B": "B/16"}
PP_TRAIN = ("decode|inception_crop(224, area_min=8, method='bicubic')|flip_lr"
            "|randaug(2, 9, ops='timm', mstd=0.5, increasing=True)|normalize"
            "|random_erase(0.25)|onehot(1000, label_smoothing=0.1)")
PP_EVAL = "decode|resize_small(256, method='bicubic')|central_crop(224)|normalize|onehot(1000)"


def get_config(arg: str | None = None):
    if (arg or "S") not in MODELS:
        raise ValueError(f"deit.py:MODEL takes one of {', '.join(MODELS)} (DeiT-Ti/S/B), got "
                         f"{arg!r}")
    c = imagenet_config(batch_size=BATCH, total_steps=EPOCHS * TRAIN_IMAGES // BATCH,
                        train_split="train", eval_every_steps=2500)
    c.data.pp_train, c.data.pp_eval = PP_TRAIN, PP_EVAL
    c.data.mixup_alpha, c.data.cutmix_alpha = 0.8, 1.0
    c.data.aug_repeats = 3
    c.model = model_config(MODELS[arg or "S"], image_size=224, drop_path=0.1,
                           head_zero_init=False)
    c.optim.update(name="adamw", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05,
                   schedule="cosine", warmup_steps=5 * TRAIN_IMAGES // BATCH,
                   end_lr_factor=1e-5 / 1e-3)
    c.evals.train_eval = {"kind": "classification", "split": "train[:1%]"}
    return c
