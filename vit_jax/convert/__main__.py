"""``python -m vit_jax.convert``: converts between our checkpoints and Google's and timm's (see the
package docstring for the formats and when a round trip is exact)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from vit_jax import checkpoints, cli, loading, paths
from vit_jax import params as params_lib
from vit_jax.convert import (
    EXTENSIONS,
    FORMATS,
    GELU_FORMS,
    brief,
    import_checkpoint,
    save_google_npz,
    save_timm_safetensors,
)
from vit_jax.models.vit import VisionTransformer


def _parser() -> argparse.ArgumentParser:
    summary = sys.modules["vit_jax.convert"].__doc__.split("\n\n")[0]
    p = argparse.ArgumentParser(prog="python -m vit_jax.convert", description=summary,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True,
                   help="Google .npz, timm .safetensors, ours (.npz, or the directory convert "
                        "wrote it to), or a training workdir / checkpoints/<step> directory")
    p.add_argument("--output", required=True, help="a file, or a directory (-> DIR/model.*)")
    p.add_argument("--to", choices=FORMATS, default="vit_jax", help="output format")
    p.add_argument("--step", type=int, help="a training workdir's step (default: the latest)")
    p.add_argument("--variant", help="e.g. B/16: supplies what shapes cannot (timm head count)")
    p.add_argument("--num_heads", type=int)
    p.add_argument("--image_size", help="build for this size (H or H,W); resamples positions")
    p.add_argument("--resample", help="position resampling method for a new image_size")
    p.add_argument("--pool", help="override the inferred pooling (cls, gap, map, none)")
    p.add_argument("--posemb", help="for files without a learned table: sincos2d or none")
    p.add_argument("--gelu", choices=sorted(GELU_FORMS),
                   help="the GELU a Google/timm file's model used (default: its family's, "
                        "Google tanh, timm exact); exact brings back bit-exactly a model of "
                        "ours exported to Google")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config, params, source = _read_input(args)
        out = _output_path(args.output, args.to)
        _write(out, args.to, config, params)
    except ValueError as e:
        cli.print_error(str(e))
        return cli.USAGE_EXIT
    gelu = "tanh" if config.get("gelu_approximate") else "exact"
    print(f"wrote {out} ({args.to}; {brief(config)}, {sum(v.size for v in params.values()):,} "
          f"parameters, image_size {config['image_size']}, {gelu} GELU) from {source}")
    return 0


def _read_input(args: argparse.Namespace) -> tuple[dict, dict[str, np.ndarray], str]:
    """(config, loop-form params, what was read) of ``--input``: a file, the directory convert
    wrote or a training run."""
    path = loading.resolve(args.input)
    options = _import_options(args)
    if not path.is_dir():
        if args.step is not None:
            raise ValueError(f"--step applies to training workdirs, not to {args.input}")
        return *import_checkpoint(path, **options), str(path)
    if options:
        flags = ", ".join(f"--{_FLAGS.get(k, k)}" for k in sorted(options))
        raise ValueError(f"{flags} apply to Google and timm files; {args.input} is a training "
                         "run, whose checkpoint records its architecture")
    _, step = checkpoints.locate(path, args.step)
    model = loading.load_model(path, step=step, verbose=False)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{args.input} holds a {type(model).__name__}; only ViTs convert")
    return params_lib.architecture(model), params_lib.flat_params(model), f"{path} step {step}"


_FLAGS = {"gelu_approximate": "gelu"}  # import options named differently on the command line


def _import_options(args: argparse.Namespace) -> dict:
    """The options given for reading a Google/timm file, as ``import_checkpoint`` keywords."""
    image_size = None
    if args.image_size is not None:
        try:
            image_size = [int(v) for v in args.image_size.split(",")]
        except ValueError:
            raise ValueError(f"--image_size={args.image_size}: expected H or H,W") from None
        image_size = image_size[0] if len(image_size) == 1 else image_size
    options = dict(resample=args.resample, variant=args.variant, num_heads=args.num_heads,
                   image_size=image_size, pool=args.pool, posemb=args.posemb,
                   gelu_approximate=GELU_FORMS.get(args.gelu))
    return {k: v for k, v in options.items() if v is not None}


def _output_path(output: str, fmt: str) -> Path:
    """``--output`` as the file to write: a name with ``fmt``'s extension, or DIR/model.ext."""
    ext, suffix = EXTENSIONS[fmt], Path(output).suffix  # the name as given, before symlinks
    if suffix in EXTENSIONS.values() and suffix != ext:
        raise ValueError(f"--output={output} names a {suffix} file but --to={fmt} writes {ext}: "
                         f"name a {ext} file or a directory")
    out = paths.absolute(output)
    return out if suffix == ext else out / f"model{ext}"


def _write(out: Path, fmt: str, config: Mapping, params: Mapping[str, np.ndarray]) -> None:
    if fmt == "vit_jax":
        abstract = nnx.eval_shape(lambda: params_lib.build_architecture(config))
        params_lib.check_fit(abstract, params)  # checks names and shapes, allocates nothing
        params_lib.save_npz(out, config, params)
        return
    model = params_lib.load_params_into(params_lib.build_architecture(config), params)
    if fmt == "google" and not config.get("gelu_approximate"):
        print("note: this model uses the exact GELU; Google's code computes the tanh form "
              "(logits differ by ~1e-4). Re-import the file with --gelu=exact to get this "
              "model back exactly.", file=sys.stderr)
    (save_timm_safetensors if fmt == "timm" else save_google_npz)(model, out)


if __name__ == "__main__":
    sys.exit(main())
