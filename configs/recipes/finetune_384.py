"""The original ViT fine-tuning recipe at 384² on ImageNet-1k (Dosovitskiy et al. 2021, B.1.1).

  python -m vit_jax.main --config=configs/recipes/finetune_384.py:CHECKPOINT[,VARIANT] \
      --workdir=runs/finetune_384 --config.data.data_dir=/path/to/tensorflow_datasets

CHECKPOINT is what to fine-tune (a Google ``.npz`` such as ImageNet-21k ``ViT-B_16.npz``, a timm
``.safetensors``, a converted file or a training workdir); VARIANT (default B/16) must be its
architecture. Needs ``imagenet2012`` prepared by TFDS in ``data_dir``
(``python -m vit_jax.data.mock_imagenet DIR`` writes a mock to try the path). The paper reports
ViT-B/16 from ImageNet-21k at 84.0% and ViT-L/16 at 85.2% top-1 with this recipe.

The recipe (the paper's appendix and ``vision_transformer``'s ``configs/common.py``): batch 512,
SGD with momentum 0.9 (its momentum kept in bfloat16 there: our ``mu_dtype`` is Adam's, so ours
is float32), no weight decay, lr 0.03 (the paper sweeps 0.003-0.06 and takes the best on
``train[99%:]``), 500 warmup steps then cosine to 0 over 20,000 steps, gradient clipping at global
norm 1, no dropout, no mixup or RandAugment. Train pp: inception crop to 384 (area 5-100%) and
flip; eval pp: resize to 384. The learned position table is resampled from the checkpoint's grid
to 24×24 with ``scipy.ndimage.zoom``-style linear interpolation (``posemb_resample="zoom"``, the
original's), and a checkpoint with another class count gets a new zero head.
"""

from vit_jax.config import imagenet_config, model_config

PP_COMMON = "|value_range(-1,1)|onehot(1000)"


def get_config(arg: str | None = None):
    checkpoint, _, variant = (arg or "").partition(",")
    if not checkpoint:
        raise ValueError("finetune_384.py needs the checkpoint to fine-tune: "
                         "--config=configs/recipes/finetune_384.py:CHECKPOINT[,VARIANT]")
    c = imagenet_config(batch_size=512, total_steps=20_000, train_split="train[:99%]",
                        eval_every_steps=1000)
    c.init_from = checkpoint
    c.data.pp_train = "decode|inception_crop(384)|flip_lr" + PP_COMMON
    c.data.pp_eval = "decode|resize(384)" + PP_COMMON
    c.model = model_config(variant or "B/16", image_size=384, posemb_resample="zoom")
    c.optim.update(name="sgd", momentum=0.9, lr=0.03, weight_decay=0.0, schedule="cosine",
                   warmup_steps=500, grad_clip_norm=1.0)
    c.evals.minival = {"kind": "classification", "split": "train[99%:]"}
    return c
