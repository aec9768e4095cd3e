"""Preemption: SIGTERM asks the train loop to checkpoint and exit at the next step boundary."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils

_PREEMPTED = threading.Event()


def install_preemption_handler(signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
    """On SIGTERM, only set a flag: the loop polls `preemption_requested()` at a step
    boundary, saves synchronously and exits cleanly (nothing is saved from inside a signal
    handler, where the train state may be half-updated).

    Multi-process runs skip this: JAX's preemption service (`jax.distributed`) owns
    SIGTERM there and agrees on a common step across hosts.
    """
    if jax.process_count() > 1:
        logging.info("Multi-process run: relying on JAX's preemption sync point.")
        return

    def handler(signum: int, frame: Any) -> None:
        logging.warning("Received signal %d: will checkpoint and exit at the next step.", signum)
        _PREEMPTED.set()

    for sig in signals:
        signal.signal(sig, handler)


def preemption_requested(step: int | None = None) -> bool:
    """True once a preemption signal arrived. With several processes and a `step`, asks
    JAX's preemption sync point so that every host stops at the same step."""
    if jax.process_count() > 1 and step is not None:
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # Preemption service not enabled: fall back to the local flag.
            pass
    return _PREEMPTED.is_set()


def reset_preemption() -> None:
    """Clears the flag (tests, or a loop that handled the signal and keeps going)."""
    _PREEMPTED.clear()
