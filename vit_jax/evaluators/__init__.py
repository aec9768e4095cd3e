"""Evaluators, chosen by name in ``config.evals`` and built once per run.

``config.evals`` maps a name to a section whose ``kind`` picks the module here; the metrics an
evaluator returns are named ``<name>/<metric>`` (the default ``eval`` section gives
``eval/accuracy`` and ``eval/loss``). Training calls each every ``every_steps`` (default: the
run's ``eval_every_steps``) and at the end; sweeps and notebooks call them on any model through
``ModelView.of(model)``. Adding an evaluator is one module with a ``from_config`` and one line
in ``KINDS``.
"""

from __future__ import annotations

from typing import Any

import ml_collections as mlc
from ml_collections.config_dict import placeholder

from vit_jax.checks import is_int
from vit_jax.evaluators import classification, fewshot, linear_probe, packed
from vit_jax.evaluators.section import section_data
from vit_jax.evaluators.view import ModelView

KINDS = {"classification": classification, "fewshot": fewshot, "linear_probe": linear_probe,
         "packed": packed}
SECTION_KEYS = ("kind", "every_steps", "batch_size")  # every kind's; each adds its own KEYS


def default_evals() -> mlc.ConfigDict:
    """One classification pass over the eval split: what ``eval/accuracy`` always meant."""
    section = {"kind": "classification", "every_steps": placeholder(int),
               "split": placeholder(str), "batch_size": placeholder(int)}
    return mlc.ConfigDict({"eval": section}, type_safe=False)


def check(config: mlc.ConfigDict) -> None:
    """Every section names a known kind and only its keys, with valid values (before any
    work)."""
    for name, section in config.evals.items():
        kind = section.get("kind")
        if kind not in KINDS:
            raise ValueError(f"config.evals.{name}.kind={kind!r}; valid: {sorted(KINDS)}")
        valid = SECTION_KEYS + KINDS[kind].KEYS
        unknown = sorted(set(section) - set(valid))
        if unknown:
            raise ValueError(f"config.evals.{name}: unknown keys {unknown}; valid for "
                             f"kind={kind!r}: {', '.join(valid)}")
        for key in ("every_steps", "batch_size"):
            value = section.get(key)
            if value is not None and not (is_int(value) and value >= 1):
                raise ValueError(f"config.evals.{name}.{key}={value!r} must be a positive "
                                 "integer (default: the run's eval_every_steps / "
                                 "eval_batch_size)")
        KINDS[kind].check_section(config, name, section)


def build(config: mlc.ConfigDict) -> dict[str, Any]:
    """``{name: evaluator}`` for ``config.evals``."""
    return {name: KINDS[section["kind"]].from_config(config, name, section)
            for name, section in config.evals.items()}


def every_steps(config: mlc.ConfigDict, name: str) -> int:
    return config.evals[name].get("every_steps") or config.eval_every_steps


__all__ = ["KINDS", "ModelView", "build", "check", "default_evals", "every_steps",
           "section_data"]
