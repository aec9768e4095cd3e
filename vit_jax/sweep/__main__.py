"""Command line: ``python -m vit_jax.sweep --config=configs/sweeps/NAME.py[:ARG] --workdir=DIR``.

``--config.x=y`` changes the sweep config, e.g. ``--config.base.total_steps=100`` (every point)
or ``--config.init_from=runs/quickstart`` (the resolution sweep). ``--dry_run`` validates and
lists the points without training. Rerunning with the same workdir resumes the sweep.
"""

from __future__ import annotations

import sys

from absl import flags, logging
from ml_collections import config_flags

from vit_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the points' runs and the results go.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate and list the points, train nothing.")
flags.mark_flags_as_required(["config", "workdir"])


def dry_run(sweep) -> None:
    from vit_jax.config import validate
    from vit_jax.sweep import expand_points
    from vit_jax.sweep.budget import apply_budget

    if sweep.get("kind", "grid") == "resolution":
        print(f"resolution sweep {sweep.name}: resolutions {list(sweep.resolutions)}, "
              f"methods {list(sweep.methods)}, init_from {sweep.init_from}")
        validate(sweep.base)
        return
    if sweep.get("kind", "grid") == "flexi":
        print(f"flexi sweep {sweep.name}: patch sizes {list(sweep.patch_sizes)}, init_from "
              f"{sweep.init_from}, compare {sweep.compare}")
        validate(sweep.base)
        return
    points = apply_budget(expand_points(sweep), sweep)
    for p in points:
        try:
            if p.config_error:
                raise ValueError(p.config_error)
            validate(p.config)
            status = "ok"
        except Exception as e:  # noqa: BLE001 -- listing, not running
            status = f"INVALID: {e}"
        base = f" (base {p.base})" if p.base else ""
        print(f"{p.index:3d}/{len(points)} {p.name}{base}: {p.delta} {status}")


def main(argv: list[str]) -> None:
    from vit_jax.runtime import configure_runtime

    configure_runtime()
    logging.set_verbosity(logging.WARNING)
    try:
        if _DRY_RUN.value:
            dry_run(_CONFIG.value)
            return
        from vit_jax.sweep.points import Preempted
        from vit_jax.sweep.runner import run_sweep

        try:
            run_sweep(_CONFIG.value, _WORKDIR.value)
        except Preempted as e:
            print(f"stopped: {e}", file=sys.stderr)
            sys.exit(1)
    except ValueError as e:
        cli.fail(str(e))


if __name__ == "__main__":
    cli.run(main)
