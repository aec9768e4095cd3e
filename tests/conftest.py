"""Test setup: CPU only, 8 fake devices for sharding tests (set before jax starts its backend),
and one JAX compilation cache for the whole session.

The suite is compile-bound: its subprocesses (the README's commands, resumes after a kill,
multi-host jobs, sweeps) compile the same small train and eval steps again and again. The
persistent cache lets every xdist worker and every process they start reuse an executable XLA
already built in this session. It lives in a fresh directory, removed at the end, so no run
sees another's entries; its size limit turns on JAX's file lock, so a process never reads an
entry another is still writing. Set ``JAX_COMPILATION_CACHE_DIR`` yourself to choose another.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")

if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="vit_jax_tests_jit_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(8 * 2**30)  # > 0: entries are locked
