"""Process-level setup that must happen before JAX starts its backend: XLA:CPU flags.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so ``configure_runtime()`` must run
before any JAX computation (``vit_jax.main`` calls it first thing). It appends ``CPU_FLAGS`` to
whatever ``XLA_FLAGS`` the user set (a flag the user already gave is never overridden), only
when the default backend will be the CPU (flags tuned on XLA:CPU are never applied to a GPU or
TPU job), and only flags the installed jaxlib defines (an unknown flag aborts the process).

``CPU_FLAGS`` is empty today because no flag measured on our 2-core AVX-512 machines speeds up
the train step (``python -m benchmarks.throughput`` re-measures them; benchmarks/RESULTS.md):
turning XLA:CPU's YNNPACK fusions off (``--xla_cpu_experimental_ynn_fusion_type=``, with or
without ``--xla_cpu_use_onednn=true``) speeds inference up a little for some widths but makes
the ViT train step 2.3-2.5x slower and its compile 3x longer with jax 0.10.2; oneDNN alone
changes nothing while YNNPACK handles the dots. Put a flag here only with a measurement.

Opt out with ``VIT_JAX_CPU_FLAGS=0`` (then ``XLA_FLAGS`` is left exactly as the user set it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import mmap
import os
import pkgutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

OPT_OUT_ENV = "VIT_JAX_CPU_FLAGS"
# Flags appended on XLA:CPU, each a measured win (see the module docstring for what lost).
CPU_FLAGS: tuple[str, ...] = ()


def configure_runtime(env: Mapping[str, str] | None = None) -> list[str]:
    """Appends the CPU defaults to ``XLA_FLAGS`` when the backend will be XLA:CPU.

    Returns the flags it added (empty when it added none: opted out, an accelerator will be
    the default backend, the user set them already, or this jaxlib does not know a flag). Safe
    to call twice. Calling it after JAX has started its backend has no effect on that process.
    """
    env = os.environ if env is None else env
    if env.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    if not backend_will_be_cpu(env):
        return []
    current = env.get("XLA_FLAGS", "")
    given = {token.split("=", 1)[0] for token in current.split()}
    missing = [f for f in CPU_FLAGS if f.split("=", 1)[0] not in given]
    # An unknown flag in XLA_FLAGS aborts the process, and experimental flags come and go
    # between jaxlib releases: add only the ones this jaxlib defines.
    added = [f for f in missing if jaxlib_knows_flag(f)]
    if added:
        env["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()  # type: ignore[index]
    return added


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


def jaxlib_knows_flag(flag: str, libraries: Sequence[Path] | None = None) -> bool:
    """Whether the installed jaxlib defines ``flag`` (e.g. ``--xla_cpu_use_onednn=true``).

    A defined flag's name is a NUL-terminated string in jaxlib's native library; a removed
    one survives only as a reserved proto field name, which is not NUL-delimited. Reading the
    few megabytes up to the name costs ~40 ms, far less than the abort a wrong guess causes.
    """
    name = flag.lstrip("-").split("=", 1)[0].encode()
    needle = b"\0" + name + b"\0"
    for path in _jaxlib_libraries() if libraries is None else libraries:
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(needle) != -1:
                    return True
        except (OSError, ValueError):
            continue
    return False


def _jaxlib_libraries() -> list[Path]:
    """jaxlib's native libraries, largest (the XLA runtime) first."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return []
    paths = [p for loc in spec.submodule_search_locations for p in Path(loc).glob("*.so*")]
    return sorted(paths, key=lambda p: p.stat().st_size, reverse=True)


def backend_started() -> bool:
    """True when JAX has already started a backend, so new ``XLA_FLAGS`` would be ignored."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    return bool(getattr(xla_bridge, "_backends", None))
