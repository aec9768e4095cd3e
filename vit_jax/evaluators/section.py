"""What every evaluator kind reads from its ``config.evals.<name>`` section."""

from __future__ import annotations

import ml_collections as mlc

from vit_jax import data


def section_data(config: mlc.ConfigDict, section: mlc.ConfigDict) -> dict:
    """The data an evaluator reads: the run's ``config.data`` with the section's ``data``
    overrides (another dataset, its pp strings), so one run evaluates on several datasets."""
    overrides = section.get("data") or {}
    if isinstance(overrides, mlc.ConfigDict):
        overrides = overrides.to_dict()
    return {**config.data.to_dict(), **overrides}


def check_data(config: mlc.ConfigDict, name: str, section: mlc.ConfigDict) -> None:
    """A section's ``data`` overrides name valid data keys and values (before any work); the
    run's own data config is validated by ``config.validate`` itself."""
    if not section.get("data"):
        return
    try:
        data.resolve(section_data(config, section))
    except data.DataError as e:
        raise ValueError(f"config.evals.{name}.data: {e}") from e
