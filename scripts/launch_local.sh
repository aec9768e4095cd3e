#!/usr/bin/env bash
# Runs one training job as N processes on this machine (CPU devices), as on N hosts:
#   scripts/launch_local.sh N CONFIG WORKDIR [--devices_per_process=4] [--config.x=y ...]
# Exits non-zero (killing the rest) as soon as any process fails. See vit_jax/launch_local.py.
set -euo pipefail
# The repository of this script even when it is reached through a symlink.
REPO="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "error: no Python environment at $PY; run 'make install' in $REPO first (or set PYTHON)" >&2
  exit 2
fi
exec "$PY" -m vit_jax.launch_local "$@"
