"""A checkpointable batch iterator whose whole state is the step counter.

Batch `step` is a pure function of (config, seed, step), so restoring is slicing the batch
dataset at `step`: the state is tiny, JSON-serialisable, independent of the worker count, and
(for the same global batch size) even of the process count. It subclasses grain's
`DatasetIterator`, so grain/Orbax checkpoint helpers that call get_state/set_state work too.
"""

from __future__ import annotations

import gc
import re
import sys
from typing import Any

import grain
import jax
from absl import flags
from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

from vit_jax.data.config import DataConfig
from vit_jax.data.errors import DataError

# What a checkpoint written before a fingerprint key existed ran with: that option's default.
_SAVED_BEFORE_IT_EXISTED = {"aug_repeats": DataConfig.aug_repeats}


class BatchIterator(grain.DatasetIterator):
    """Iterates `batches[step:]` with grain threads/processes; `num_steps=None` is endless."""

    def __init__(
        self,
        batches: grain.MapDataset,
        *,
        workers: int,
        prefetch: int,
        num_steps: int | None,
        fingerprint: dict[str, Any],
    ):
        super().__init__()
        self._batches, self._workers, self._prefetch = batches, workers, prefetch
        self.num_steps, self._fingerprint = num_steps, fingerprint
        self._step, self._iterator = 0, None

    def __next__(self) -> dict[str, Any]:
        if self.num_steps is not None and self._step >= self.num_steps:
            self._close_iterator()  # Frees worker processes as soon as a finite pass ends.
            raise StopIteration
        if self._iterator is None:
            self._iterator = self._start(self._step)
        try:
            batch = next(self._iterator)
        except RuntimeError as e:
            death = _worker_death(e, self._workers, self._prefetch)
            if death is None:
                raise
            raise death from e
        self._step += 1
        if self._workers:
            _unlink_shared_memory(batch)
        return batch

    def _start(self, step: int):
        batches = self._batches[step:] if step else self._batches
        # One reader thread overlaps preprocessing with the (GIL-releasing) train step.
        read = grain.ReadOptions(
            num_threads=1 if self._prefetch else 0, prefetch_buffer_size=self._prefetch
        )
        ds = batches.to_iter_dataset(read)
        if self._workers:
            _make_grain_profiling_flag_readable()
            options = grain.MultiprocessingOptions(
                num_workers=self._workers, per_worker_buffer_size=max(self._prefetch, 1)
            )
            ds = ds.mp_prefetch(options)
        return iter(ds)

    def get_state(self) -> dict[str, Any]:
        return {"step": self._step, **self._fingerprint}

    def set_state(self, state: dict[str, Any]) -> None:
        saved = {**_SAVED_BEFORE_IT_EXISTED, **state}
        wrong = {k: (saved.get(k), v) for k, v in self._fingerprint.items() if saved.get(k) != v}
        if wrong:
            details = ", ".join(f"{k}: saved {s!r}, now {v!r}" for k, (s, v) in wrong.items())
            raise DataError(f"iterator state is from a different input pipeline ({details})")
        self._close_iterator()
        self._step = int(state["step"])

    def _close_iterator(self) -> None:
        iterator, self._iterator = getattr(self, "_iterator", None), None
        if iterator is not None:
            iterator.close()

    def close(self) -> None:
        """Stops the workers and releases the shared memory of every batch they delivered."""
        self._close_iterator()
        super().close()
        if self._workers:
            _wait_for_shared_memory_release()


def _worker_death(error: RuntimeError, workers: int, prefetch: int) -> DataError | None:
    """grain's error for a worker process that died, as one line that says what to change
    (grain's own names only the exit code; -9 is nearly always the out-of-memory killer)."""
    found = re.search(r"terminated unexpectedly with exit code (-?\d+)", str(error))
    if found is None:
        return None
    code = int(found.group(1))
    cause = ("killed by SIGKILL, usually the out-of-memory killer" if code == -9
             else f"exit code {code}")
    return DataError(
        f"a data worker process died ({cause}): each of data.workers={workers} processes holds "
        f"up to data.prefetch={max(prefetch, 1)} preprocessed batches in host memory; lower "
        "data.workers, data.prefetch or the batch size")


def _unlink_shared_memory(batch: dict[str, Any]) -> None:
    """Removes the names of a delivered batch's shared-memory blocks at once; the mapping
    stays valid until the last array using it is gone (POSIX), then the memory is freed.

    grain unlinks a block only when its array is garbage-collected, on a background thread.
    On CPU, jax.device_put aliases host arrays instead of copying them, so a jax array alive
    at interpreter exit (a last batch, a cached argument) kept its block named past that
    thread's end, and Python's resource tracker reported "leaked shared_memory objects".
    """
    for leaf in jax.tree.leaves(batch):
        if isinstance(leaf, SharedMemoryArray) and leaf._unlink_on_del:
            leaf.shm.unlink()
            leaf._unlink_on_del = False  # grain's flag: unlink on delete


def _wait_for_shared_memory_release() -> None:
    """Batches that grain's threads had received but not yet delivered when the iterator
    closed are released on grain's background thread when dropped; a program that exits
    right after would leave them undone (reported as leaked). One no-op through the same
    single-thread pool runs after them."""
    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is None or sys.is_finalizing():  # at exit the pool may be gone: never block there
        return
    gc.collect()  # batches caught in reference cycles queue their release now
    pool.apply_async(int).wait(timeout=10)


def _make_grain_profiling_flag_readable() -> None:
    """Lets grain start workers in programs that never parse absl flags (tests, notebooks).

    With jax installed, grain 0.2.18 reads its absl flag
    `--grain_enable_multiprocess_worker_profiling` when starting workers, which raises
    UnparsedFlagAccessError unless absl flags were parsed (as `app.run` does). Marking only that
    flag as given (at its default value) touches no other flag and is overridden by a later parse.
    """
    name = "grain_enable_multiprocess_worker_profiling"
    if not flags.FLAGS.is_parsed() and name in flags.FLAGS:
        flags.FLAGS[name].present = max(flags.FLAGS[name].present, 1)
