"""Sweeps: many training runs from one config, measured and tabulated.

  python -m vit_jax.sweep --config=configs/sweeps/patch_size.py --workdir=runs/sweeps/patch_size

A sweep config (``configs/sweeps/*.py``) returns ``base`` (a full experiment config) and
``points`` (flat deltas like ``{"model.patch_size": 8}``), optionally ``seeds`` (every point
once per seed) and a ``budget`` (equal steps or equal FLOPs); ``runner`` trains every run in its
own workdir: ``points`` (deltas, records, progress), ``grid`` (train, measure, evaluate each
point), ``resolution`` (one checkpoint at other resolutions), ``flexi`` (one FlexiViT checkpoint
at every patch size) or ``native`` (one packed checkpoint at every token budget), chosen by
the config's ``kind`` in ``runner``; ``measure`` adds parameters / tokens / FLOPs / memory /
throughput, ``report`` writes results.{json,csv,md} and plots.
"""

from __future__ import annotations

import ml_collections as mlc
from ml_collections.config_dict import placeholder

# What each row of a sweep's table shows and which plots it draws, by default.
DEFAULT_TABLE = ("name", "params", "tokens", "gflops", "total_steps", "train_tflops",
                 "train_img_s", "eval_img_s",
                 "peak_memory_mib", "wall_seconds", "best_accuracy", "final_accuracy",
                 "final_loss", "train_accuracy", "status")
DEFAULT_PLOTS = ("accuracy_vs_x", "accuracy_vs_tokens", "accuracy_vs_gflops",
                 "throughput_vs_tokens")


def sweep_config(name: str, base: mlc.ConfigDict, points: list[dict], *,
                 bases: dict | None = None, **options) -> mlc.ConfigDict:
    """A grid sweep: every key a sweep reads, with its default (so ``--config.x=y`` can set it).

    ``points`` are flat deltas over ``base`` (``{"model.patch_size": 8}``); a point may also
    hold ``name`` (its row and workdir name) and ``base`` (a key of ``bases``, for points that
    start from different experiment configs).
    """
    c = mlc.ConfigDict()
    c.name = name
    c.kind = "grid"
    c.description = ""
    c.base = base
    c.bases = mlc.ConfigDict()
    for key, value in (bases or {}).items():
        c.bases[key] = value
    c.points = [dict(p) for p in points]
    c.x_key = "name"  # accuracy is plotted against this delta key (or record column)
    c.x_label = placeholder(str)
    c.log_x = False
    c.plots = list(DEFAULT_PLOTS)
    c.table_columns = list(DEFAULT_TABLE)
    c.eval_train = False  # also evaluate the final model on the training examples
    # throughput_steps 0: skip the timed steps; internals: attention entropy, position signal
    c.measure = mlc.ConfigDict(dict(throughput_steps=5, internals=False))
    c.seeds = []  # each point once per seed; tables show mean +- std (n), plots error bars
    # "steps": each point's own total_steps; "flops": all at ``reference``'s compute (budget.py)
    c.budget = mlc.ConfigDict(dict(kind="steps", reference=""))
    c.conclusion = ""  # the study's answer to its question, ending results.md
    c.limits = ""  # what the study does not show
    _set_options(c, options)
    return c


def resolution_sweep_config(name: str, base: mlc.ConfigDict, **options) -> mlc.ConfigDict:
    """The resolution sweep (``vit_jax.sweep.resolution``): one checkpoint, many resolutions."""
    from vit_jax.models.resample import METHODS

    c = sweep_config(name, base, [])
    c.kind = "resolution"
    c.init_from = placeholder(str)  # a workdir or checkpoint; None: train ``base`` first
    c.resolutions = [base.model.image_size]
    c.methods = list(METHODS)
    c.pp_train = "decode|resize({res})|flip_lr|value_range(-1,1)|onehot(6)"
    c.pp_eval = "decode|resize({res})|value_range(-1,1)|onehot(6)"
    c.finetune = mlc.ConfigDict()  # nested delta over ``base`` for the fine-tune runs
    c.finetune_steps = 50
    _set_options(c, options)
    return c


def flexi_sweep_config(name: str, base: mlc.ConfigDict, **options) -> mlc.ConfigDict:
    """The FlexiViT sweep (``vit_jax.sweep.flexi``): one model, every patch size."""
    c = sweep_config(name, base, [])
    c.kind = "flexi"
    c.init_from = placeholder(str)  # a FlexiViT workdir or checkpoint; None: train ``base``
    c.patch_sizes = list(base.model.get("flexi_patch_sizes") or ())
    c.compare = placeholder(str)  # a patch-size sweep's results.json to draw beside it
    _set_options(c, options)
    return c


def native_sweep_config(name: str, base: mlc.ConfigDict, **options) -> mlc.ConfigDict:
    """The native-resolution sweep (``vit_jax.sweep.native``): one packed-trained model at
    many token budgets per image."""
    c = sweep_config(name, base, [])
    c.kind = "native"
    c.init_from = placeholder(str)  # a packed run's workdir or checkpoint; None: train ``base``
    c.token_budgets = [4, 9, 16, 25, 36, 49, 64]
    c.max_images = 4  # images per packed eval sequence
    c.pp = "decode|resize_tokens({max_tokens}, {patch})|value_range(-1,1)|onehot(10)"
    c.compare = placeholder(str)  # a resolution sweep's results.json to draw beside it
    _set_options(c, options)
    return c


def _set_options(c: mlc.ConfigDict, options: dict) -> None:
    unknown = sorted(set(options) - set(c.keys()))
    if unknown:
        raise ValueError(f"unknown sweep options {unknown}; valid: {sorted(c.keys())}")
    for key, value in options.items():
        c[key] = value


def flatten(tree, prefix: str = "") -> dict:
    """``{"optim": {"lr": 0.1}}`` (dict or ConfigDict) -> ``{"optim.lr": 0.1}``."""
    tree = tree.to_dict() if isinstance(tree, mlc.ConfigDict) else tree
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def __getattr__(name: str):  # these import jax and the trainer: only when used
    if name in ("expand_points", "point_name"):
        from vit_jax.sweep import points

        return getattr(points, name)
    if name == "run_sweep":
        from vit_jax.sweep.runner import run_sweep

        return run_sweep
    raise AttributeError(f"module 'vit_jax.sweep' has no attribute {name!r}")


__all__ = ["DEFAULT_PLOTS", "DEFAULT_TABLE", "expand_points", "flatten", "flexi_sweep_config",
           "native_sweep_config", "point_name",
           "resolution_sweep_config", "run_sweep", "sweep_config"]
