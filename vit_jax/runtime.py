"""Process-level setup that must happen before JAX starts its backend: XLA:CPU flags and the
host memory allocator.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so ``configure_runtime()`` must run
before any JAX computation (``vit_jax.main`` calls it first thing). It appends ``CPU_FLAGS`` to
whatever ``XLA_FLAGS`` the user set (a flag the user already gave is never overridden), only
when the default backend will be the CPU (flags tuned on XLA:CPU are never applied to a GPU or
TPU job).

``CPU_FLAGS`` is empty today: no flag measured on our CPUs speeds up the train step (the flag
sets tried, e.g. XLA:CPU's YNNPACK fusions off, and their figures: benchmarks/RESULTS.md;
``python -m benchmarks.throughput`` re-measures them). Put a flag here only with a measurement.
No GPU flag is set either: none tried on one H200 sped up the B/16 train step
(benchmarks/RESULTS_GPU.md; ``scripts/device_check.sh`` re-measures them); a GPU flag would get
its own tuple, applied only when the backend is a GPU.

Opt out with ``VIT_JAX_CPU_FLAGS=0`` (then ``XLA_FLAGS`` is left exactly as the user set it).

The allocator: XLA:CPU allocates each step's scratch memory (1.6 GB for a Ti/16 train step at
batch 32) from the C library and frees it after the step. glibc hands an allocation that large
to a fresh ``mmap`` every time and unmaps it on free, so every step page-faults all of it
again: 425,000 faults and 0.75 s of kernel time per Ti/16 step on 2 cores, a sixth of its CPU
time (benchmarks/RESULTS_OTHER_AMD.md, "Host memory"). ``keep_freed_memory`` makes glibc
serve every thread from one heap that is never given back (``mallopt``: one arena, no
``mmap``, no trim), so the next step reuses the same pages: 1.28x the Ti/16 train step there.
The price: a process holds the memory it has freed (its resident size stays at its peak, as
with a GPU's caching allocator), and compiling is ~20% slower (the compiler's threads share the
heap). Applied for XLA:CPU jobs on glibc only; opt out with ``VIT_JAX_CPU_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import subprocess
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

OPT_OUT_ENV = "VIT_JAX_CPU_FLAGS"
MALLOC_OPT_OUT_ENV = "VIT_JAX_CPU_MALLOC"
# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets: one arena for
# every thread (a second arena maps each large block anew), no mmap, never trim (-1 is SIZE_MAX).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
KEEP_FREED_MEMORY = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
# Flags appended on XLA:CPU, each a measured win (see the module docstring for what lost).
CPU_FLAGS: tuple[str, ...] = ()


def configure_runtime(env: MutableMapping[str, str] | None = None,
                      cpu_flags: Sequence[str] = CPU_FLAGS,
                      mallopt: Callable[[int, int], int] | None = None) -> list[str]:
    """Appends ``cpu_flags`` to ``XLA_FLAGS`` and keeps freed host memory for reuse
    (``keep_freed_memory``), when the backend will be XLA:CPU.

    Returns what it changed: the flags it added, and ``"malloc: keep freed memory"`` when it
    set the allocator (empty when it changed nothing: opted out, an accelerator will be the
    default backend, not glibc, or the user set the flags already). ``mallopt``: glibc's, or a
    stand-in (tests). Safe to call twice. Calling it after JAX has started its backend has no
    effect on that process.
    """
    env = os.environ if env is None else env
    if not backend_will_be_cpu(env):
        return []
    changed = []
    if not _opted_out(env, MALLOC_OPT_OUT_ENV) and keep_freed_memory(mallopt):
        changed.append("malloc: keep freed memory")
    if _opted_out(env, OPT_OUT_ENV):
        return changed
    current = env.get("XLA_FLAGS", "")
    given = {token.split("=", 1)[0] for token in current.split()}
    added = [f for f in cpu_flags if f.split("=", 1)[0] not in given]
    if added:
        env["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()  # type: ignore[index]
    return added + changed


def _opted_out(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def keep_freed_memory(mallopt: Callable[[int, int], int] | None = None) -> bool:
    """Makes glibc keep freed memory for the next allocation instead of returning it to the
    system (module docstring: why). True when every setting took; False off glibc.

    Must run before the threads that allocate start (JAX's backend): a thread that already
    has its own arena keeps it.
    """
    if mallopt is None:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False  # musl, macOS, ...: their allocators are left alone
        mallopt = libc.mallopt
    return all([mallopt(param, value) == 1 for param, value in KEEP_FREED_MEMORY])


def backend_will_be_cpu(env: Mapping[str, str] | None = None) -> bool:
    """Whether JAX's default backend will be the CPU, decided without starting JAX.

    ``JAX_PLATFORMS`` (or the older ``JAX_PLATFORM_NAME``) decides when set: JAX's default is
    its first entry. Unset, JAX uses any accelerator plugin it finds (CUDA, ROCm, TPU, Metal,
    ...), so the answer is CPU only when no such plugin is installed. Starting the backend to
    ask ``jax.default_backend()`` is not an option: that would fix ``XLA_FLAGS`` before the
    flags are set.
    """
    env = os.environ if env is None else env
    platforms = env.get("JAX_PLATFORMS") or env.get("JAX_PLATFORM_NAME") or ""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not accelerator_plugins(env)


def accelerator_plugins(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of installed JAX accelerator plugins (found without importing them)."""
    env = os.environ if env is None else env
    found = [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
    spec = importlib.util.find_spec("jax_plugins")  # the namespace-package discovery path
    if spec is not None and spec.submodule_search_locations:
        found += [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)]
    if importlib.util.find_spec("libtpu") is not None or env.get("TPU_LIBRARY_PATH"):
        found.append("libtpu")
    return sorted(set(found))


def host_info() -> dict[str, Any]:
    """CPU model and the ISA flags that matter for XLA:CPU, GPU name and driver: the machine a
    measurement (a benchmark table, a sweep record) names as the one it ran on."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        for line in cpuinfo.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["isa"] = sorted(f for f in flags if f.startswith(("avx512", "amx"))
                                     or f in ("avx2", "fma"))
                break
    except OSError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
        if smi.returncode == 0:
            info["gpu"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def describe_host() -> str:
    """One line: CPU model x cores, and the GPU if any."""
    info = host_info()
    text = f"{info.get('cpu', info['machine'])} x {info['cpu_count']} cores"
    return text + (f", {info['gpu']}" if info.get("gpu") else "")
