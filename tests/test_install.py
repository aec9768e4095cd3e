"""`make install ACCEL=...`: the plugin pinned to requirements.txt's JAX, the choice kept for
later make commands, a bad value refused in one line, ``auto`` detecting this machine, the
dependencies' bytecode compiled at install."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import flax
import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
JAX = re.search(r"^jax==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)


def dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "-C", str(ROOT), "install", *args],
                          capture_output=True, text=True)


@pytest.mark.parametrize("accel", ["cuda13", "cuda12", "tpu"])
def test_accelerator_plugin_is_pinned_to_our_jax(accel):
    done = dry_run(f"ACCEL={accel}")
    assert done.returncode == 0, done.stderr
    assert f'"jax[{accel}]=={JAX}"' in done.stdout
    assert f"echo {accel} > .venv/accel" in done.stdout
    assert f"touch .venv/.installed-{accel}" in done.stdout


def test_auto_detects_this_cpu_machine_and_bad_values_are_one_line():
    detected = subprocess.run(["sh", str(ROOT / "scripts/detect_accel.sh")],
                              capture_output=True, text=True).stdout
    has_accelerator = shutil.which("nvidia-smi") or Path("/dev/accel0").exists()
    assert detected in ("cuda13\n", "cuda12\n", "tpu\n") if has_accelerator else \
        detected == "cpu\n"
    done = dry_run("ACCEL=cuda11")
    assert done.returncode == 2
    assert re.search(r"\*\*\* ACCEL=cuda11 is not one of: cpu cuda13 cuda12 tpu auto\.",
                     done.stderr), done.stderr


def test_the_pinned_plugins_resolve_from_the_registry():
    """The versions `make install ACCEL=cuda13` asks for exist (resolved, not installed)."""
    done = subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--dry-run",
                           "--python", sys.executable, f"jax[cuda13]=={JAX}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"jax-cuda13-plugin=={JAX}" in done.stderr + done.stdout


def test_the_venv_is_installed_with_its_bytecode():
    """uv leaves bytecode to the first import, which cannot write it where
    PYTHONDONTWRITEBYTECODE is set: every process would parse jax and flax again (+2.3 s)."""
    done = dry_run("ACCEL=cpu", "-B")
    assert done.returncode == 0, done.stderr
    assert re.search(r"uv pip install -q --compile-bytecode .*-r requirements\.txt", done.stdout)
    for module in (jax, flax):
        assert Path(importlib.util.cache_from_source(module.__file__)).is_file(), module
