"""Classify images with a trained run, preprocessed exactly as the run's own evaluation was.

    from vit_jax import load_predictor
    predict = load_predictor("runs/quickstart")          # the latest checkpoint; top 5
    predict(["digit.png", pil_image, uint8_array])       # per image: [Prediction, ...]
    # -> [[Prediction(label=7, name='7', probability=0.98), ...], ...]

    python -m vit_jax.predict --workdir=runs/quickstart [--step=N] [--top_k=K] [--weights=ema] \
        IMAGE...
    # one line per image:  digit.png: 7 (0.98), 1 (0.01), ...

The preprocessing is the run's ``config.data.pp_eval`` as saved with the checkpoint, built by the
data package's pp builder minus its label-only ops (``onehot``) and applied the way the input
pipeline applies it (``pipeline.run_pp``). A file goes through the pp's own ``decode``, so it is
decoded exactly as the dataset's images were; an array (uint8, HxW or HxWxC) or a PIL image
skips the byte decoding but gets the same channel handling. Class names are the dataset's
(digits '0'..'9', a folder's class directories, a TFDS dataset's label names), or the label
index as a string where the dataset has none or its data is not on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from PIL import Image

from vit_jax import checkpoints, cli, data, loading, paths
from vit_jax.data.order import example_rng
from vit_jax.data.pipeline import run_pp
from vit_jax.data.sources import class_names as dataset_class_names

ImageLike = str | os.PathLike | Image.Image | np.ndarray


class Prediction(NamedTuple):
    label: int  # the class index the model was trained with
    name: str  # the dataset's class name (the index as a string when it has none)
    probability: float  # softmax of the logits


class Predictor:
    """A trained model with its run's eval preprocessing: images in, top-k classes out."""

    def __init__(self, model: nnx.Module, pp: data.Preprocess,
                 class_names: Sequence[str] | None = None, *, top_k: int = 5,
                 batch_size: int = 64):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.pp, self.top_k, self.batch_size = model, pp, top_k, batch_size
        self.class_names = tuple(class_names) if class_names is not None else None
        graphdef, self._state = nnx.split(model)
        self._forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, train=False))

    def __call__(self, images: Sequence[ImageLike]) -> list[list[Prediction]]:
        """Per image, the ``top_k`` most probable classes (fewer if the model has fewer)."""
        logits = self.logits(images).astype(np.float64)
        if not logits.size:
            return []
        z = np.exp(logits - logits.max(-1, keepdims=True))
        probs = z / z.sum(-1, keepdims=True)
        return [[Prediction(int(i), self._name(int(i)), float(p[i]))
                 for i in np.argsort(-p, kind="stable")[:self.top_k]] for p in probs]

    def logits(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(N, classes) float32 logits, in equal-size jitted batches (the last one padded)."""
        batch = self.preprocess(images)
        if not len(batch):
            return np.zeros((0, 0), np.float32)
        size = min(self.batch_size, len(batch))
        out = []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            pad = np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)
            logits = self._forward(self._state, np.concatenate([chunk, pad]))
            out.append(np.asarray(logits)[:len(chunk)])
        return np.concatenate(out)

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """(N, H, W, C) float32: the images as the model sees them after the eval pp."""
        if isinstance(images, str | os.PathLike | Image.Image | np.ndarray):
            raise TypeError("pass a list of images (paths, PIL images or uint8 arrays), "
                            f"not a single {type(images).__name__}")
        records = _Images(list(images))
        # As EvalExample: a random op (unusual in pp_eval) gets example i's eval generator.
        out = [np.asarray(run_pp(records, self.pp, i, example_rng(0, 0, i)
                                 if self.pp.needs_rng else None)["image"], np.float32)
               for i in range(len(records))]
        self._check_shapes(out, records)
        return np.stack(out) if out else np.zeros((0,), np.float32)

    def _check_shapes(self, images: list[np.ndarray], records: _Images) -> None:
        """Every image at the size the model was trained on: a ViT would silently resample
        its positions for another size, and nothing in the eval pp may have resized it."""
        size = getattr(self.model, "image_size", None)
        want = (*size, self.model.in_channels) if size is not None else None
        want = want or (images[0].shape if images else None)
        for i, image in enumerate(images):
            if image.shape != want:
                raise data.DataError(
                    f"{records.describe(i)}: {_shape(image.shape)} after the run's pp_eval "
                    f"{self.pp.spec!r}, but the model takes {_shape(want)} images; give images "
                    f"that this pp turns into {_shape(want)} (e.g. resize them first)")

    def _name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names is not None and label < len(names) else str(label)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


class _Images:
    """The images to classify as pp records (``run_pp`` names ``describe(i)`` in errors): files
    as their bytes, for the pp's ``decode``; arrays and PIL images as they are."""

    def __init__(self, images: list[ImageLike]):
        self.images = [_checked(image, i) for i, image in enumerate(images)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        if isinstance(image, Path):
            try:
                return {"image": image.read_bytes()}
            except OSError as e:
                raise data.DataError(f"cannot read image {image}: {e}") from e
        return {"image": image}

    def describe(self, index: int) -> str:
        image = self.images[index]
        return str(image) if isinstance(image, Path) else f"image {index}"


def _checked(image: ImageLike, index: int) -> Path | Image.Image | np.ndarray:
    if isinstance(image, str | os.PathLike):
        path = paths.absolute(image)
        if not path.is_file():
            raise data.DataError(f"{image}: no such image file")
        return path
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise data.DataError(f"image {index}: an array of shape {image.shape} and dtype "
                                 f"{image.dtype}; expected uint8 (H, W) or (H, W, C)")
        return image
    raise TypeError(f"image {index}: a {type(image).__name__}; expected a path, a PIL image or "
                    "a uint8 numpy array")


def eval_pp(spec: str) -> data.Preprocess:
    """The run's ``pp_eval`` for unlabelled images: label-only ops dropped, and a ``decode``
    first if it has none (its dataset stored arrays, but a file must still be decoded)."""
    pp = data.build_pp(spec).without_label_ops()
    if any(name == "decode" for name, _ in pp.ops):
        return pp
    return data.build_pp("|".join(["decode", pp.spec] if pp.spec else ["decode"]))


def class_names(data_config: Any) -> tuple[str, ...] | None:
    """The dataset's class names, or None (with a warning) when its data is not here."""
    try:
        return dataset_class_names(data.resolve(data_config))
    except (data.DataError, OSError) as e:
        warnings.warn(f"class names unavailable, labels are shown as indices: {e}", stacklevel=2)
        return None


def load_predictor(workdir: str | os.PathLike, *, step: int | None = None, top_k: int = 5,
                   batch_size: int = 64, weights: str = "raw") -> Predictor:
    """A ``Predictor`` for a training workdir (or one of its ``checkpoints/<step>``
    directories) at ``step`` (default: the latest), with the eval pp saved in its checkpoint;
    ``weights="ema"``: the run's weight average (``optim.ema_decay``)."""
    path, step = _checkpoint(workdir, step)  # the model and the config of one step
    config = loading.load_config(path, step)
    if "data" not in config or "pp_eval" not in config.data:
        raise ValueError(f"{path} (step {step}) was saved without a data config, so its eval "
                         "preprocessing is unknown; use load_model and your own preprocessing")
    pp = eval_pp(config.data.pp_eval)
    model = loading.load_model(path, step=step, verbose=False, weights=weights)
    return Predictor(model, pp, class_names(config.data), top_k=top_k, batch_size=batch_size)


def _checkpoint(workdir: str | os.PathLike, step: int | None) -> tuple[Path, int]:
    """(the absolute workdir, the step to use), or why ``workdir`` has no usable checkpoint."""
    path = paths.absolute(workdir)
    if path.is_file():
        raise ValueError(f"{workdir} is a file; a predictor needs a training workdir, whose "
                         "checkpoint holds the run's eval preprocessing (a converted file has "
                         "none: use load_model and your own preprocessing)")
    return path, checkpoints.locate(path, step)[1]


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit_jax.predict", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a training workdir (or checkpoints/<step>)")
    p.add_argument("--step", type=int, help="the checkpoint step (default: the latest)")
    p.add_argument("--top_k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--weights", choices=checkpoints.WEIGHTS, default="raw",
                   help="the trained parameters (raw, default) or the run's weight average "
                        "(ema; a run trained with optim.ema_decay)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    errors = [e for e in map(_image_error, args.images) if e]
    if args.top_k < 1:
        errors.append(f"--top_k={args.top_k}: must be at least 1")
    if not errors:
        try:
            _checkpoint(args.workdir, args.step)
        except ValueError as e:
            errors.append(str(e))
    if errors:  # every bad input at once, before any model is loaded
        for error in errors:
            cli.print_error(str(error))
        return 2
    try:
        predictions = load_predictor(args.workdir, step=args.step, top_k=args.top_k,
                                     weights=args.weights)(args.images)
    except ValueError as e:
        cli.print_error(str(e))
        return 2
    for image, top in zip(args.images, predictions, strict=True):
        print(f"{image}: " + ", ".join(f"{p.name} ({p.probability:.2f})" for p in top))
    return 0


def _image_error(image: str) -> str | None:
    """Why ``image`` cannot be classified (missing, not decodable as the pipeline decodes), or
    None."""
    path = paths.absolute(image)
    if not path.is_file():
        return f"{image}: no such image file"
    try:
        data.build_pp("decode")({"image": path.read_bytes()})
    except (OSError, data.DataError) as e:
        return f"{image}: {e}"
    return None


if __name__ == "__main__":
    sys.exit(main())
