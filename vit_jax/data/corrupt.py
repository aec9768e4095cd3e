"""`skip_corrupt=True`: find unreadable images up front so batches never silently change.

Skipping lazily inside the pipeline would shift which examples land in which batch (and differ
between processes); scanning once before iteration keeps the example order a pure function of
the seed. The scan fully decodes every image (threads: PIL releases the GIL while decoding) and
is cached per process by the caller's key (e.g. the files' sizes and mtimes).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from vit_jax.data.records import Records, Subset

_CACHE: dict[Hashable, tuple[np.ndarray, tuple[str, ...]]] = {}


def drop_corrupt(records: Records, cache_key: Hashable) -> tuple[Records, tuple[str, ...]]:
    """Returns (the readable examples, descriptions of the skipped ones)."""
    if cache_key not in _CACHE:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            ok = np.fromiter(pool.map(lambda i: _readable(records, i), range(len(records))), bool)
        bad = tuple(records.describe(i) for i in np.flatnonzero(~ok))
        _CACHE[cache_key] = (np.flatnonzero(ok), bad)
    good, bad = _CACHE[cache_key]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        logging.warning("skip_corrupt: skipped %d unreadable images: %s", len(bad), shown)
    return (Subset(records, good) if bad else records), bad


def _readable(records: Records, index: int) -> bool:
    try:
        data = records[index]["image"]
        if isinstance(data, bytes):
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        return True
    except Exception:
        return False
