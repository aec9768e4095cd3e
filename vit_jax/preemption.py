"""Clean stops: SIGTERM (preemption) or Ctrl-C asks the train loop to checkpoint and exit at the
next step boundary."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

import jax
from jax.experimental import multihost_utils

_PREEMPTED = threading.Event()
_SIGNAL: list[int | None] = [None]


def install_preemption_handler(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
                               ) -> dict[int, Any]:
    """On SIGTERM or Ctrl-C (SIGINT), only set a flag: the loop polls `preemption_requested()`
    at a step boundary, saves synchronously and exits cleanly (nothing is saved from inside a
    signal handler, where the train state may be half-updated). A second Ctrl-C stops at once
    (the previous checkpoint stays intact).

    Multi-process runs skip this: JAX's preemption service (`jax.distributed`) owns
    SIGTERM there and agrees on a common step across hosts. Returns the handlers it replaced.
    """
    if jax.process_count() > 1:
        logging.info("Multi-process run: relying on JAX's preemption sync point.")
        return {}

    def handler(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and _PREEMPTED.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: the user means now
        _SIGNAL[0] = signum
        _PREEMPTED.set()
        if signum == signal.SIGINT:
            print("\nInterrupted: saving a checkpoint at the end of this step, then exiting "
                  "(Ctrl-C again to stop at once).", flush=True)

    return {sig: signal.signal(sig, handler) for sig in signals}


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """The handlers above for the duration of a training loop, then the previous ones again
    (a notebook's Ctrl-C interrupts its kernel as usual outside of training)."""
    reset_preemption()
    previous = install_preemption_handler()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def received_signal() -> int | None:
    """The signal that asked to stop (SIGTERM or SIGINT), or None."""
    return _SIGNAL[0] if _PREEMPTED.is_set() else None


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
    _SIGNAL[0] = None
