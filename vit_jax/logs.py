"""What people read: progress lines from process 0, and libraries' noise kept out of them.

Orbax, TFDS and grain log through absl at WARNING for situations this project creates on
purpose (a periodic save without eval metrics, a dataset folder probed before its first
preparation). ``drop_messages`` silences exactly those messages, nothing else.
"""

from __future__ import annotations

import logging
import sys

import jax


class _DropFilter(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


def drop_messages(*fragments: str, logger: str = "absl") -> None:
    """Drops records of ``logger`` whose message contains any of ``fragments``."""
    logging.getLogger(logger).addFilter(_DropFilter(fragments))


def drop_unraisable(exception: type[BaseException], message: str) -> None:
    """Drops ``exception(message)`` raised where nobody can catch it (in a callback run by a
    C++ thread, reported through ``sys.unraisablehook``); other reports print as before."""
    previous = sys.unraisablehook

    def hook(report) -> None:
        e = report.exc_value
        if not (isinstance(e, exception) and str(e) == message):
            previous(report)

    sys.unraisablehook = hook


def log(message: str) -> None:
    """Progress for people: printed by process 0 only (one copy per job), flushed so a pipe
    or a log file shows it live."""
    if jax.process_index() == 0:
        print(message, flush=True)
