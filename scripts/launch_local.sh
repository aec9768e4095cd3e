#!/usr/bin/env bash
# Runs one training job as N processes on this machine (CPU devices), as on N hosts:
#   scripts/launch_local.sh N CONFIG WORKDIR [--devices_per_process=4] [--config.x=y ...]
# Exits non-zero (killing the rest) as soon as any process fails. See vit_jax/launch_local.py.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m vit_jax.launch_local "$@"
