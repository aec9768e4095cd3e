"""big_vision's plain ViT-S/16 on ImageNet-1k ("Better plain ViT baselines", arXiv 2205.01580).

  python -m vit_jax.main --config=configs/recipes/vit_s16_i1k.py:90 --workdir=runs/vit_s16_i1k \
      --config.data.data_dir=/path/to/tensorflow_datasets

The argument is the number of epochs: 90 (the paper: 76.5% top-1 on validation, 6-7 h on a
TPU v3-8), 150 (78.5%) or 300 (80.0%). Needs ``imagenet2012`` prepared by TFDS in ``data_dir``;
``python -m vit_jax.data.mock_imagenet DIR`` writes a mock with the same features and splits.

Every hyperparameter of ``big_vision/configs/vit_s16_i1k.py``:
- data: ``train[:99%]`` (the last 1% is ``minival``), batch 1024, no label smoothing; train pp
  inception crop to 224 (area 5-100%, aspect 3/4-4/3), flip, RandAugment(2, 10), then mixup with
  Beta(0.2, 0.2); eval pp resize the short side to 256, central crop 224;
- model: S/16, global average pooling, no class token, fixed 2D sin-cos positions, a
  representation layer (dense + tanh, width 384) before a zero-initialised head;
- optimizer: Adam (b1 0.9, b2 0.999, first moment in bfloat16), lr 1e-3, 10k linear warmup steps
  then cosine to 0, gradient clipping at global norm 1. big_vision's ``wd=1e-4`` is decoupled
  and multiplied by the schedule, not by the learning rate (``param -= sched · wd · param`` each
  step); optax's AdamW multiplies its weight decay by the learning rate, so the same decay is
  ``weight_decay = 1e-4 / 1e-3 = 0.1`` here;
- evals every 2500 steps: ``val`` (validation), ``minival`` (train[99%:]), ``train``
  (train[:2%]). big_vision's ImageNet-v2 and ReaL evals need those datasets prepared; add them as
  sections with ``data=dict(name="tfds:imagenet_v2", eval_split="test")``.
Not as big_vision: grain's global shuffle replaces its 250k-example shuffle buffer, and images
are decoded whole before the crop (its fused decode-and-crop gives the same pixels, faster).
"""

from vit_jax.config import imagenet_config, model_config

TRAIN_IMAGES = 1_268_355  # train[:99%] of ImageNet-1k's 1,281,167
BATCH = 1024
PP_COMMON = "|value_range(-1,1)|onehot(1000)"


def get_config(arg: str | None = None):
    text = arg or "90"
    epochs = int(text) if text.isdigit() else 0
    if epochs < 1:
        raise ValueError(f"vit_s16_i1k.py:EPOCHS needs a positive whole number of epochs "
                         f"(the paper's: 90, 150, 300), got {arg!r}")
    c = imagenet_config(batch_size=BATCH, total_steps=epochs * TRAIN_IMAGES // BATCH,
                        train_split="train[:99%]", eval_every_steps=2500)
    c.data.pp_train = "decode|inception_crop(224)|flip_lr|randaug(2, 10)" + PP_COMMON
    c.data.pp_eval = "decode|resize_small(256)|central_crop(224)" + PP_COMMON
    c.data.mixup_alpha = 0.2
    c.model = model_config("S/16", image_size=224, pool="gap", class_token=False,
                           posemb="sincos2d", representation_size=384, head_zero_init=True)
    c.optim.update(name="adamw", lr=1e-3, b1=0.9, b2=0.999, mu_dtype="bfloat16",
                   weight_decay=0.1, schedule="cosine", warmup_steps=10_000,
                   grad_clip_norm=1.0)
    c.evals.minival = {"kind": "classification", "split": "train[99%:]"}
    c.evals.train_eval = {"kind": "classification", "split": "train[:2%]"}
    return c
