"""Sweeps of one checkpoint: train ``base`` once (unless ``init_from`` names a checkpoint),
then evaluate that checkpoint once per setting (the flexi and native sweeps)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections as mlc

from vit_jax.logs import log
from vit_jax.paths import absolute
from vit_jax.sweep import grid
from vit_jax.sweep.points import Point, Progress, make_point, run_or_reload


def run_on_one_checkpoint(
    sweep: mlc.ConfigDict, workdir: Path, *, run_name: str, settings: Sequence[Any],
    point_for: Callable[[int, Any], Point],
    evaluate: Callable[[Point, Path, str, Any], dict],
    write_reports: Callable[[list[dict], mlc.ConfigDict, Path], None],
) -> list[dict]:
    """The training point ``run_name`` (skipped with ``sweep.init_from``), then
    ``evaluate(point, its workdir, checkpoint, setting)`` for each setting's point
    (``point_for(index, setting)``); reports are rewritten after every point, finished points
    are reloaded, and a failed training run ends the sweep with its record."""
    init_from = str(absolute(sweep.init_from)) if sweep.init_from else None
    progress = Progress(sweep.name, len(settings) + (0 if init_from else 1), log)
    records: list[dict] = []

    def finish(rec: dict) -> None:
        records.append(rec)
        write_reports(records, sweep, workdir)

    if not init_from:
        base = make_point(1, run_name, {}, sweep.base)
        pdir = workdir / "points" / base.name
        rec = run_or_reload(base, pdir, lambda: grid.run_point(base, pdir, sweep), progress)
        finish(rec)
        if rec["status"] != "done":
            log(f"[sweep {sweep.name}] the {run_name} run failed, nothing to evaluate: "
                f"{rec['error']}")
            return records
        init_from = str(pdir)
    for setting in settings:
        point = point_for(len(records) + 1, setting)
        pdir = workdir / "points" / point.name
        finish(run_or_reload(point, pdir, lambda p=point, d=pdir, s=setting: evaluate(
            p, d, init_from, s), progress))
    log(f"[sweep {sweep.name}] finished. Results: {workdir}/results.md")
    return records
