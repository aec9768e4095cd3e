"""The experiment config schema: every key a run reads, with its default, in one place.

Config files in ``configs/`` start from ``base_config()`` and change what they need; the
ConfigDict stays locked so a mistyped ``--config.x=y`` fails at once. ``validate`` then checks
values, opens the data to count it and probe the preprocessing, and builds the model abstractly,
before any parameter memory is allocated or a step is run.
"""

from __future__ import annotations

import importlib.util
import typing
from pathlib import Path

import ml_collections as mlc
from ml_collections.config_dict import placeholder

from vit_jax import evaluators, optim
from vit_jax.data.config import DataConfig
from vit_jax.data.config import default_config as data_default_config
from vit_jax.paths import absolute


def base_config() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.seed = 0
    c.total_steps = 1000
    c.batch_size = 128  # global, over all processes and devices
    c.data = mlc.ConfigDict(overridable(  # keys and defaults: vit_jax/data/config.py
        data_default_config().to_dict(), _scalar_types(typing.get_type_hints(DataConfig))))
    c.model = model_config("Ti/16", image_size=32)
    c.optim = mlc.ConfigDict(overridable(optim.DEFAULTS, optim.OPTIONAL_TYPES))
    c.eval_every_steps = 200  # the default of every evaluator's every_steps
    c.evals = evaluators.default_evals()  # name -> evaluator section (vit_jax/evaluators/)
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    # verify: check each step's files against its integrity record before restoring it.
    c.checkpoint = mlc.ConfigDict(dict(keep=3, keep_best=True, best_metric="eval/accuracy",
                                       async_save=True, verify=True))
    c.eval_batch_size = 256  # the default of every evaluator's batch_size
    # Device mesh (vit_jax/sharding.py): one axis may be -1 to take the remaining devices.
    c.mesh = mlc.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.init_from = placeholder(str)  # a checkpoint to fine-tune from (transfer)
    return c


def imagenet_config(*, batch_size: int, total_steps: int, train_split: str,
                    eval_every_steps: int) -> mlc.ConfigDict:
    """``base_config`` with what the ImageNet-1k recipes (``configs/recipes/``) share: TFDS
    ``imagenet2012`` with its validation split as the headline ``eval``, 16 input workers,
    evaluation batches as large as the training ones, a checkpoint every 1,000 steps and a log
    line every 50, data parallel over every device."""
    c = base_config()
    c.batch_size, c.eval_batch_size, c.total_steps = batch_size, batch_size, total_steps
    c.data.update(name="tfds:imagenet2012", train_split=train_split, eval_split="validation",
                  workers=16)
    c.evals.eval.split = "validation"  # "eval/accuracy": the headline number
    c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = eval_every_steps, 1000, 50
    return c


def _scalar_types(hints: dict[str, typing.Any]) -> dict[str, type]:
    """The first scalar type of each annotation (``float | None`` -> float)."""
    out = {}
    for name, hint in hints.items():
        scalars = [t for t in typing.get_args(hint) or (hint,) if t in (int, float, str, bool)]
        if scalars:
            out[name] = scalars[0]
    return out


def takes_no_argument(arg: str | None, config_file: str) -> None:
    """For configs without a ``:ARG``: one given by mistake is an error, not ignored."""
    if arg:
        raise ValueError(f"{Path(config_file).name} takes no argument, got {arg!r}; drop the "
                         f"':{arg}'")


def load_config_file(path: str | Path, arg: str | None = None) -> mlc.ConfigDict:
    """``get_config(arg)`` of a config file (``configs/NAME.py``), as ``--config=PATH:ARG``
    loads it: for sweeps, notebooks and benchmarks that start from the shipped configs."""
    path = absolute(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file {path}")
    spec = importlib.util.spec_from_file_location(f"_vit_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


def overridable(defaults: dict, types: dict[str, type]) -> dict:
    """``defaults`` with each None replaced by a typed placeholder: ml_collections can only
    override a field from the command line (``--config.x=5``) when it knows the field's type,
    and a bare None has none."""
    missing = sorted(k for k, v in defaults.items() if v is None and k not in types)
    if missing:
        raise TypeError(f"None defaults {missing} need a type to be overridable")
    return {k: placeholder(types[k]) if v is None else v for k, v in defaults.items()}


# Options that default to what the variant string says (None = take it from the variant).
FROM_VARIANT = ("width", "depth", "mlp_dim", "num_heads", "patch_size")


def model_config(variant: str, **changes) -> mlc.ConfigDict:
    """Every option of the model class with its default, so ``--config.model.X=`` can set any.

    The defaults are read from the model's own signature: the class is the single source of
    truth. Type-unsafe so image/patch sizes may be ints or (h, w) pairs.
    """
    from vit_jax.models import CNNS, model_class, model_options

    from_variant = {} if variant in CNNS else dict.fromkeys(FROM_VARIANT)
    defaults = {**model_options(variant), **from_variant}
    hints = typing.get_type_hints(model_class(variant).__init__)
    types = {**_scalar_types(hints), **dict.fromkeys(FROM_VARIANT, int)}
    options = {"variant": variant, **overridable(defaults, types)}
    unknown = sorted(set(changes) - set(options))
    if unknown:
        raise ValueError(f"unknown model options {unknown} for {variant!r}; valid: "
                         f"{', '.join(sorted(options))}")
    return mlc.ConfigDict({**options, **changes}, type_safe=False)


def model_kwargs(config: mlc.ConfigDict, num_classes: int) -> dict:
    """Arguments for ``create_model`` from ``config.model``."""
    kw = {k: v for k, v in config.model.to_dict().items()
          if not (k in FROM_VARIANT and v is None)}
    return dict(variant=kw.pop("variant"), num_classes=num_classes, **kw)


def model_patch_size(config: mlc.ConfigDict) -> tuple[int, int]:
    """The ViT's patch (rows, columns): ``model.patch_size``, else its variant's."""
    from vit_jax.models.variants import parse_variant
    from vit_jax.sizes import as_pair

    model = config.model
    return as_pair(model.patch_size or parse_variant(model.variant).get("patch_size"),
                   "model.patch_size")


def build_model(config: mlc.ConfigDict, num_classes: int):
    """The model the config describes, initialised from ``config.seed``."""
    from vit_jax.models import create_model

    return create_model(**model_kwargs(config, num_classes), seed=config.seed)


def validate(config: mlc.ConfigDict):
    """Checks values before any work; returns the dataset info. Errors name key and fix."""
    import jax
    from flax import nnx

    from vit_jax import data

    for key in ("total_steps", "batch_size", "eval_batch_size", "log_every_steps",
                "eval_every_steps", "checkpoint_every_steps"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"config.{key} must be a positive integer, got {config[key]!r}")
    from vit_jax import sharding

    procs = jax.process_count()
    mesh = sharding.mesh_shape(config.mesh, jax.device_count())
    batch_devices = mesh["data"] * mesh["fsdp"]
    for key in ("batch_size", "eval_batch_size"):
        for what, n in (("processes", procs), ("data*fsdp devices of the mesh", batch_devices)):
            if config[key] % n:
                raise ValueError(f"config.{key}={config[key]} is not divisible by the {n} "
                                 f"{what}; use a multiple of {n}")
    accum = config.optim.grad_accum_steps
    if not isinstance(accum, int) or accum < 1 or (config.batch_size // procs) % accum:
        raise ValueError(f"config.optim.grad_accum_steps={accum!r} must be a positive integer "
                         f"dividing the per-process batch {config.batch_size // procs}")
    if not isinstance(config.seed, int) or isinstance(config.seed, bool):
        raise ValueError(f"config.seed must be an integer, got {config.seed!r}")
    evaluators.check(config)
    keep = config.checkpoint.keep
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"config.checkpoint.keep={keep!r} must be an integer >= 1 (the latest "
                         "checkpoint is needed to resume)")
    if config.init_from and not absolute(config.init_from).exists():
        raise ValueError(f"config.init_from={config.init_from}: nothing there (looked at "
                         f"{absolute(config.init_from)}); give a training workdir, a "
                         "checkpoints/<step> folder or a .npz/.safetensors file")
    optim.build_tx(dict(config.optim.to_dict(), total_steps=config.optim.total_steps
                        or config.total_steps))
    info = data.dataset_info(config.data)
    try:  # shapes only: catches bad variants, patch/image mismatches, head counts
        model = nnx.eval_shape(lambda: build_model(config, info.num_classes))
    except (ValueError, TypeError) as e:
        raise ValueError(f"config.model: {e}") from None
    if config.data.get("packing"):
        _check_packed_model(model, config)
    for name, section in config.evals.items():
        if section.get("kind") == "packed":
            fixes = packed_model_fixes(model)
            if fixes:
                raise ValueError(f"config.evals.{name} (kind='packed') needs a ViT pooling "
                                 f"each image of a sequence: set {' '.join(fixes)}")
    return info


def packed_model_fixes(model) -> list[str]:
    """The flags that make ``model`` take packed sequences (none: it does)."""
    from vit_jax.models.vit import VisionTransformer

    if not isinstance(model, VisionTransformer):
        return ["--config.model.variant to a ViT's"]
    fixes = []
    if model.num_prefix:
        fixes.append("--config.model.class_token=False --config.model.num_registers=0")
    if model.pool not in ("gap", "map"):
        fixes.append("--config.model.pool=gap (or map)")
    return fixes


def _check_packed_model(model, config: mlc.ConfigDict) -> None:
    """Packed training (data.packing) needs a ViT that pools each image of a sequence."""
    fixes = packed_model_fixes(model)
    patch = config.data.packing.get("patch_size")
    if hasattr(model, "patch_size") and tuple(model.patch_size) != (patch, patch):
        fixes.append(f"--config.data.packing.patch_size={model.patch_size[0]} (the model's)")
    if fixes:
        raise ValueError("data.packing needs a ViT pooling each image of a sequence, with the "
                         f"model's patch size: set {' '.join(fixes)}")


def packed_max_grid(config: mlc.ConfigDict, num_classes: int) -> tuple[int, int] | None:
    """The largest patch grid a packed image may have: the learned position tables' (None for
    sincos2d, fractional or no positions, which cover any grid, and without data.packing)."""
    if not config.data.get("packing"):
        return None
    from flax import nnx

    model = nnx.eval_shape(lambda: build_model(config, num_classes))
    return model.posemb.max_grid
