"""Evaluation passes the sweeps add to a run: any model on any split, and the run's final model."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections as mlc
from flax import nnx

from vit_jax import data, metrics, optim
from vit_jax.checkpoints import Checkpointer
from vit_jax.config import build_model


def evaluate(model: nnx.Module, data_config, *, batch_size: int, prefix: str = "eval/") -> dict:
    """Top-1 and loss of ``model`` over the eval split of ``data_config`` (padding masked)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, batch):
        logits = nnx.merge(graphdef, state)(batch["image"], train=False)
        return metrics.eval_batch_metrics(logits, batch["labels"], batch["mask"])

    total = None
    for batch in data.build_eval_iterator(data_config, batch_size=batch_size):
        batch = {k: batch[k] for k in ("image", "labels", "mask")}
        out = step(state, batch)
        total = out if total is None else total.merge(out)
    return metrics.compute_eval_metrics(total, prefix=prefix)


def train_split_config(config: mlc.ConfigDict) -> mlc.ConfigDict:
    """The data config with the eval split set to the examples the run trained on.

    ``train_subset=N`` trains on the first N examples of the train split, which is the TFDS
    slice ``train[:N]``; the eval pipeline (no augmentation) is kept.
    """
    cfg = mlc.ConfigDict(config.data.to_dict())
    subset = cfg.get("train_subset")
    cfg.eval_split = f"{cfg.train_split}[:{subset}]" if subset else cfg.train_split
    return cfg


def restore_final_model(config: mlc.ConfigDict, workdir: str | Path, num_classes: int):
    """The model of the newest checkpoint in ``workdir`` (the final step of a finished run)."""
    model = build_model(config, num_classes)
    tx_cfg = dict(config.optim.to_dict(), total_steps=config.total_steps)
    optimizer = nnx.Optimizer(model, optim.build_tx(tx_cfg), wrt=nnx.Param)
    ckpt = Checkpointer(workdir, **config.checkpoint)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {workdir} to evaluate")
        ckpt.restore(step, model=model, optimizer=optimizer)
    finally:
        ckpt.close()
    return model
