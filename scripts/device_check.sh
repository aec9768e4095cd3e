#!/usr/bin/env bash
# The device check (benchmarks/device_check.py): correctness, speed, the timm peer, memory and
# pixel tokens on whatever accelerator JAX finds; writes benchmarks/RESULTS_GPU.md (or --out).
#
#   scripts/device_check.sh                # on a GPU machine, ~7 minutes
#   scripts/device_check.sh --tiny --out /tmp/dc   # toy sizes on CPU (tests/test_device_check.py)
#
# On a machine without a registry, the packages its image lacks come from wheels in .whl/
# (scripts/device_wheels.sh fetches them where pip works); they are installed into a scratch
# folder put on PYTHONPATH, never over the image's own packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NEEDED="import ml_collections, clu, tensorflow_datasets, grain, tensorboardX, sybil"
if ! $PY -c "$NEEDED" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${DEVICE_CHECK_SITE:-/tmp/device_check_site}
  echo "[device_check] installing $(ls .whl/*.whl | wc -l) carried wheels into $SITE" >&2
  $PY -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if ! $PY -c "$NEEDED" 2>/dev/null && compgen -G ".whl/fallback/*.whl" >/dev/null; then
    echo "[device_check] the image's protobuf is too old for them: adding $(ls .whl/fallback)" >&2
    $PY -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$SITE" .whl/fallback/*.whl
  fi
  $PY -c "$NEEDED"  # fails here, naming the missing module, rather than halfway through
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec $PY -m benchmarks.device_check "$@"
