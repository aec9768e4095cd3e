"""XLA flags and the host allocator's settings go to XLA:CPU jobs only, flags after the user's
own, and neither when opted out."""

import ctypes
import os
import subprocess
import sys

import pytest

from vit_jax.runtime import (
    KEEP_FREED_MEMORY,
    M_ARENA_MAX,
    M_MMAP_MAX,
    M_TRIM_THRESHOLD,
    accelerator_plugins,
    backend_will_be_cpu,
    configure_runtime,
)

FLAG = "--xla_cpu_example=true"
MALLOC = "malloc: keep freed memory"


def REFUSED(param: int, value: int) -> int:
    """A mallopt that takes no setting: these tests leave the test process's allocator alone."""
    return 0


def test_cpu_flags_are_appended_for_cpu_jobs_only():
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert configure_runtime(env, cpu_flags=[FLAG], mallopt=REFUSED) == [FLAG]
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {FLAG}"
    assert configure_runtime(env, cpu_flags=[FLAG], mallopt=REFUSED) == []  # safe to call twice
    gpu = {"JAX_PLATFORMS": "cuda,cpu"}
    assert configure_runtime(gpu, cpu_flags=[FLAG], mallopt=REFUSED) == []
    assert "XLA_FLAGS" not in gpu


def test_the_users_flag_and_the_opt_out_win():
    mine = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_example=false"}
    assert configure_runtime(mine, cpu_flags=[FLAG], mallopt=REFUSED) == []
    assert mine["XLA_FLAGS"] == "--xla_cpu_example=false"
    off = {"JAX_PLATFORMS": "cpu", "VIT_JAX_CPU_FLAGS": "0"}
    assert configure_runtime(off, cpu_flags=[FLAG], mallopt=REFUSED) == []
    assert "XLA_FLAGS" not in off


def test_backend_guess_without_starting_jax():
    assert backend_will_be_cpu({"JAX_PLATFORMS": "cpu"})
    assert not backend_will_be_cpu({"JAX_PLATFORMS": "tpu"})
    # Unset: CPU exactly when no accelerator plugin is installed (none on this machine).
    assert backend_will_be_cpu({}) == (accelerator_plugins({}) == [])


def recording_mallopt():
    calls = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    return mallopt, calls


def test_cpu_jobs_keep_freed_memory_unless_opted_out():
    mallopt, calls = recording_mallopt()
    env = {"JAX_PLATFORMS": "cpu"}
    assert configure_runtime(env, cpu_flags=[FLAG], mallopt=mallopt) == [FLAG, MALLOC]
    assert calls == list(KEEP_FREED_MEMORY) == [(M_ARENA_MAX, 1), (M_MMAP_MAX, 0),
                                                (M_TRIM_THRESHOLD, -1)]
    # Each opt-out switches off its own half only.
    mallopt, calls = recording_mallopt()
    env = {"JAX_PLATFORMS": "cpu", "VIT_JAX_CPU_MALLOC": "0"}
    assert configure_runtime(env, cpu_flags=[FLAG], mallopt=mallopt) == [FLAG] and not calls
    env = {"JAX_PLATFORMS": "cpu", "VIT_JAX_CPU_FLAGS": "off"}
    assert configure_runtime(env, cpu_flags=[FLAG], mallopt=mallopt) == [MALLOC]
    assert "XLA_FLAGS" not in env
    # A GPU job's host allocator is left alone; so is one where a setting is refused.
    mallopt, calls = recording_mallopt()
    assert configure_runtime({"JAX_PLATFORMS": "cuda"}, mallopt=mallopt) == [] and not calls
    assert configure_runtime({"JAX_PLATFORMS": "cpu"}, cpu_flags=[], mallopt=REFUSED) == []


FAULTS_PROGRAM = """
import resource
from vit_jax.runtime import configure_runtime
configure_runtime()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 256), jnp.float32)
f = jax.jit(lambda x: ((x @ x.T) @ x).sum())  # a 64 MiB intermediate: XLA:CPU scratch memory
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(f(x))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"),
                    reason="the setting is glibc's")
def test_a_repeated_step_reuses_its_scratch_memory_instead_of_faulting_it_in_again():
    def faults(**env) -> int:
        r = subprocess.run([sys.executable, "-c", FAULTS_PROGRAM], capture_output=True,
                           text=True, timeout=300,
                           env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
        assert r.returncode == 0, r.stderr
        return int(r.stdout.split()[-1])

    # 64 MiB is 16,384 pages: faulted in again on every call unless the memory is kept.
    assert faults(VIT_JAX_CPU_MALLOC="0") > 16_000
    assert faults() < 100
