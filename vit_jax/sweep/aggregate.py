"""Seeds of one point -> one row: the mean, the standard deviation and n of every number.

A ``seeds`` sweep runs each point once per seed; its table and plots show each point's mean ±
sample standard deviation over the seeds that finished (n of them), and say whether its interval
separates from the best point's: a difference is called only when the intervals do not overlap.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from vit_jax import checks

# The accuracy a seeds table ranks points by and tests separation on: the test accuracy at the
# end of training (the best-over-evals accuracy is picked on the test set itself).
RANK_BY = "final_accuracy"


def has_seeds(records: Sequence[dict]) -> bool:
    return any(r.get("group") is not None for r in records)


def is_number(v) -> bool:
    """A finite int or float (not a bool): what is averaged and plotted."""
    return checks.is_number(v) and math.isfinite(v)


def aggregate(records: Sequence[dict]) -> list[dict]:
    """One row per point (``group``), in first-seen order: numbers averaged over its finished
    seeds with ``<key>_std`` beside them, ``n`` finished of ``runs``, ``seeds`` listed."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r.get("group") or r["name"], []).append(r)
    rows = []
    for name, runs in groups.items():
        done = [r for r in runs if r["status"] == "done"]
        row = {"name": name, "n": len(done), "runs": len(runs),
               "seeds": [r.get("seed") for r in done],
               "delta": {k: v for k, v in (runs[0].get("delta") or {}).items() if k != "seed"},
               "status": "done" if len(done) == len(runs) else f"{len(done)} of {len(runs)} done"}
        for key, value in runs[0].items():  # labels every seed shares (e.g. a method name)
            if isinstance(value, str) and key not in row and all(
                    r.get(key) == value for r in runs):
                row[key] = value
        keys = {k for r in done for k, v in r.items() if is_number(v)} - {"index", "seed"}
        for key in sorted(keys):
            values = [r[key] for r in done if is_number(r.get(key))]
            # the same on every seed (params, tokens, steps): kept as it is, an int stays one
            row[key] = values[0] if len(set(values)) == 1 else statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    _mark_separation(rows)
    return rows


def _mark_separation(rows: list[dict]) -> None:
    """``vs_top``: 'top' for the best mean, else whether mean ± std overlaps the top's."""
    ranked = [r for r in rows if is_number(r.get(RANK_BY))]
    if not ranked:
        return
    top = max(ranked, key=lambda r: r[RANK_BY])
    top_low = top[RANK_BY] - top[f"{RANK_BY}_std"]
    for r in ranked:
        if r is top:
            r["vs_top"] = "top"
        elif r["n"] < 2 or top["n"] < 2:
            r["vs_top"] = "n < 2: not tested"
        else:
            high = r[RANK_BY] + r[f"{RANK_BY}_std"]
            r["vs_top"] = "overlaps top" if high >= top_low else "below top (separated)"
