"""Sweep points, their records on disk and the progress over a sweep (no training in here).

Each point is a config delta with its own workdir ``<sweep workdir>/points/<name>``, where the
trainer keeps its checkpoints (so an interrupted point resumes) and ``point.json`` records
the point once it is finished, failed or preempted. ``run_or_reload`` is the one place that
decides: reload a finished record of the same config, or run the point (its earlier preempted
attempt's wall time included) and save what came of it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections as mlc

from vit_jax.checks import is_int
from vit_jax.metrics import format_duration
from vit_jax.paths import atomic_write

RECORD_FILE = "point.json"


class Preempted(RuntimeError):
    """The trainer stopped on a preemption signal: the sweep stops too (rerun to resume)."""


@dataclasses.dataclass
class Point:
    index: int  # 1-based
    name: str
    delta: dict
    base: str | None  # key into the sweep's ``bases``; None = ``base``
    config: mlc.ConfigDict | None
    config_error: str | None = None  # the delta did not apply (e.g. an unknown key)
    group: str | None = None  # the point this run is a seed of (its table row); None: itself
    seed: int | None = None  # the seed a ``seeds`` sweep gave this run


def _format_value(value) -> str:
    if isinstance(value, list | tuple):
        return "x".join(_format_value(v) for v in value)
    return str(value)


def point_name(delta: dict) -> str:
    """``{"model.patch_size": 8, "model.posemb": "none"}`` -> ``patch_size=8,posemb=none``.

    Keys are shortened to their last component unless that makes two of them collide.
    """
    if not delta:
        return "base"
    short = [k.rsplit(".", 1)[-1] for k in delta]
    keys = short if len(set(short)) == len(short) else list(delta)
    text = ",".join(f"{k}={_format_value(v)}" for k, v in zip(keys, delta.values(), strict=True))
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def config_fingerprint(config: mlc.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))


def make_point(index: int, name: str, delta: dict, base: mlc.ConfigDict,
               base_name: str | None = None, **fields) -> Point:
    """``base`` with ``delta`` applied (locked: a mistyped key is an error, not a new option);
    a delta that does not apply is kept as that point's error, so the others still run."""
    try:
        config = copy.deepcopy(base)
        config.lock()
        config.update_from_flattened_dict(delta)
        return Point(index, name, delta, base_name, config, **fields)
    except (KeyError, AttributeError, TypeError, ValueError) as e:
        return Point(index, name, delta, base_name, None,
                     f"{type(e).__name__}: bad point delta {delta}: {e}", **fields)


def expand_points(sweep: mlc.ConfigDict) -> list[Point]:
    """The grid sweep's runs with their full configs: each point once, or (``seeds``) once per
    seed, seed-major (every point at the first seed, then every point at the next), so a sweep
    stopped early already covers every point."""
    bases = sweep.get("bases") or {}
    named: list[tuple[str, dict, str | None]] = []
    for raw in sweep.points:
        raw = dict(raw)
        base_name = raw.pop("base", None)
        name = raw.pop("name", None) or (point_name(raw) if base_name is None
                                         else point_name({"base": base_name, **raw}))
        if name in (n for n, _, _ in named):
            raise ValueError(f"two points of sweep {sweep.name!r} are both named {name!r}; "
                             "give them distinct deltas or a 'name'")
        named.append((name, raw, base_name))
    seeds = list(sweep.get("seeds") or [])
    if len(set(seeds)) != len(seeds) or not all(is_int(s) and s >= 0 for s in seeds):
        raise ValueError(f"sweep seeds must be distinct ints >= 0, got {seeds}")
    if seeds and any("seed" in delta for _, delta, _ in named):
        raise ValueError("a point's delta sets 'seed' while the sweep has seeds: use one")
    runs = [(*point, s) for s in seeds or [None] for point in named]  # seed-major
    points = []
    for i, (name, delta, base_name, seed) in enumerate(runs, start=1):
        fields = {} if seed is None else dict(group=name, seed=seed)
        run_name, delta = (name, delta) if seed is None else (f"{name},seed={seed}",
                                                                {**delta, "seed": seed})
        if base_name is not None and base_name not in bases:
            points.append(Point(i, run_name, delta, base_name, None,
                                f"KeyError: point base {base_name!r} is not in the sweep's "
                                f"bases {sorted(bases)}", **fields))
            continue
        base = bases[base_name] if base_name is not None else sweep.base
        points.append(make_point(i, run_name, delta, base, base_name, **fields))
    return points


# ----------------------------------------------------------------------------- records


def _record_of_same_config(point: Point, workdir: Path) -> dict | None:
    """The saved record of ``point`` if one exists and its config is unchanged since."""
    path = workdir / RECORD_FILE
    if not path.exists() or point.config is None:
        return None
    rec = json.loads(path.read_text())
    now = config_fingerprint(point.config)
    return rec if same_config(rec.get("config"), now, _defaults(now)) else None


def same_config(saved: Any, now: Any, defaults: Any) -> bool:
    """Whether a point's recorded config is its config now. A key the record lacks is an option
    added to vit_jax after the point ran: the same config if it holds its default (``defaults``,
    the same nesting), so upgrading mid-study does not rerun finished points."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return saved == now
    if set(saved) - set(now):
        return False
    defaults = defaults if isinstance(defaults, dict) else {}
    for key, value in now.items():
        if key not in saved:
            if key not in defaults or defaults[key] != value:
                return False
        elif not same_config(saved[key], value, defaults.get(key)):
            return False
    return True


def _defaults(fingerprint: dict) -> dict:
    """Every option's default, as a fingerprint: ``base_config`` and the point's model class."""
    from vit_jax.config import base_config, model_config

    defaults = config_fingerprint(base_config())
    variant = (fingerprint.get("model") or {}).get("variant")
    if variant:
        defaults["model"] = config_fingerprint(model_config(variant))
    return defaults


def load_record(point: Point, workdir: Path) -> dict | None:
    """The finished record of ``point`` if its config is unchanged since it ran."""
    rec = _record_of_same_config(point, workdir)
    if rec is None or rec.get("status") != "done":
        return None
    return {**rec, "index": point.index, "name": point.name, "delta": point.delta}


def save_record(rec: dict, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write(workdir / RECORD_FILE, json.dumps(rec, indent=2, default=str))


def attempt(point: Point, workdir: Path, body: Callable[[dict, dict], None],
            **fields) -> dict:
    """Runs ``body(record, earlier)`` for ``point`` and returns the record: ``done``, or
    ``failed`` with the error (a failing point must not stop the sweep). ``earlier`` is the
    record of a preempted attempt of the same config (or {}): its wall time counts here. On
    ``Preempted`` the record is saved as such and the error re-raised."""
    earlier = _record_of_same_config(point, workdir) or {}
    earlier = earlier if earlier.get("status") == "preempted" else {}
    rec = {"index": point.index, "name": point.name, "delta": point.delta, "base": point.base,
           "status": "running", "workdir": str(workdir), **fields}
    if point.group is not None:
        rec.update(group=point.group, seed=point.seed)
    if point.config is not None:
        rec["config"] = config_fingerprint(point.config)
    t0 = time.time() - earlier.get("wall_seconds", 0.0)
    try:
        if point.config_error:
            raise ValueError(point.config_error)
        body(rec, earlier)
        rec["status"] = "done"
    except Preempted:
        save_record({**rec, "status": "preempted", "wall_seconds": time.time() - t0}, workdir)
        raise
    except Exception as e:  # noqa: BLE001 -- any failure of one point must not stop the sweep
        rec.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000],
                   traceback="".join(traceback.format_exc().splitlines(True)[-12:]))
    rec["wall_seconds"] = time.time() - t0
    return rec


def run_or_reload(point: Point, workdir: Path, run: Callable[[], dict],
                  progress: Progress) -> dict:
    """The finished record of an unchanged point, or ``run()``'s record, saved; either way
    reported on ``progress``."""
    rec = load_record(point, workdir)
    if rec is not None:
        progress.done(point, rec, reloaded=True)
        return rec
    progress.start(point)
    rec = run()
    save_record(rec, workdir)
    jax.clear_caches()  # compiled steps of finished points are not needed again
    progress.done(point, rec)
    return rec


class Progress:
    """'point k of n' lines with an ETA from the wall times of the points finished so far."""

    def __init__(self, name: str, total: int, log: Callable[[str], None]):
        self.name, self.total, self.log, self.walls = name, total, log, []
        self.t0 = time.time()

    def start(self, point: Point) -> None:
        self.log(f"[sweep {self.name}] point {point.index} of {self.total}: {point.name} "
                 f"{point.delta or ''}")

    def done(self, point: Point, rec: dict, reloaded: bool = False) -> None:
        if rec.get("wall_seconds") is not None:
            self.walls.append(rec["wall_seconds"])
        left = self.total - point.index
        eta = (sum(self.walls) / len(self.walls) * left) if self.walls else None
        what = "reloaded (finished earlier)" if reloaded else rec["status"]
        acc = rec.get("final_accuracy")
        acc_text = f", final eval accuracy {acc:.4f}" if isinstance(acc, float) else ""
        err = f": {rec['error'][:300]}" if rec["status"] == "failed" else ""
        self.log(f"[sweep {self.name}] point {point.index} of {self.total} {point.name} {what}"
                 f"{acc_text}{err} | wall {format_duration(rec.get('wall_seconds') or 0)}, "
                 f"sweep elapsed {format_duration(time.time() - self.t0)}, "
                 f"ETA {format_duration(eta) if eta is not None else '?'} for {left} more")
