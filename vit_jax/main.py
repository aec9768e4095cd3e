"""Command line: ``python -m vit_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR``.

Any config value can be changed with ``--config.key=value`` (e.g. ``--config.total_steps=500``,
``--config.model.variant=S/16``); an unknown key is an error.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from vit_jax.runtime import configure_runtime

    configure_runtime()
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    from vit_jax.train import train_and_evaluate

    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except ValueError as e:  # config and data errors: the message is the whole story
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
