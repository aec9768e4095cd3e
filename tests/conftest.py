"""Test setup: CPU only, 8 fake devices for sharding tests (set before jax starts its backend)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
