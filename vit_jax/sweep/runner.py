"""Runs every point of a sweep: train + evaluate + measure, resumable, failures recorded.

Each point is ``base`` config + a flat delta (``{"model.patch_size": 8}``) and gets its own
workdir ``<sweep workdir>/points/<name>``, where the trainer keeps its checkpoints (so an
interrupted point resumes) and the runner writes ``point.json`` when the point is finished or
has failed. A rerun reloads finished points whose config is unchanged, resumes unfinished ones
and retries failed ones; changing the base (e.g. raising ``total_steps``) reruns every point,
each continuing from its checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
import traceback
from pathlib import Path

import jax
import ml_collections as mlc

from vit_jax.checkpoints import Checkpointer
from vit_jax.config import validate
from vit_jax.sweep import evals, measure, report
from vit_jax.train import log, train_and_evaluate

SPECIAL_KEYS = ("name", "base")  # point keys that are not config paths
RECORD_FILE = "point.json"
MEASURED = ("params", "tokens", "gflops", "peak_memory_mib", "train_img_s", "eval_img_s")


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


def expand_points(sweep: mlc.ConfigDict) -> list[Point]:
    """The sweep's points with their full configs (a delta that does not apply is kept as an
    error for that point, so the others still run)."""
    bases = sweep.get("bases") or {}
    points, names = [], set()
    for i, raw in enumerate(sweep.points, start=1):
        raw = dict(raw)
        base_name = raw.pop("base", None)
        name = raw.pop("name", None)
        delta = raw
        name = name or (point_name(delta) if base_name is None
                        else point_name({"base": base_name, **delta}))
        if name in names:
            raise ValueError(f"two points of sweep {sweep.name!r} are both named {name!r}; "
                             "give them distinct deltas or a 'name'")
        names.add(name)
        config, error = None, None
        try:
            if base_name is not None and base_name not in bases:
                raise KeyError(f"point base {base_name!r} is not in the sweep's bases "
                               f"{sorted(bases)}")
            config = copy.deepcopy(bases[base_name] if base_name is not None else sweep.base)
            config.lock()  # a mistyped key in a delta is an error, not a new option
            config.update_from_flattened_dict(delta)
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            config, error = None, f"{type(e).__name__}: bad point delta {delta}: {e}"
        points.append(Point(i, name, delta, base_name, config, error))
    return points


def _fresh_record(point: Point, workdir: Path) -> dict:
    return {"index": point.index, "name": point.name, "delta": point.delta,
            "base": point.base, "status": "running", "workdir": str(workdir)}


def run_point(point: Point, workdir: Path, sweep: mlc.ConfigDict) -> dict:
    """Trains (or resumes) one point and measures it; failures come back as a record."""
    rec = _fresh_record(point, workdir)
    measure_cfg = sweep.get("measure") or {}
    prior = preempted_record(point, workdir)
    t0 = time.time() - prior.get("wall_seconds", 0.0)  # wall time counts earlier attempts
    try:
        if point.config_error:
            raise ValueError(point.config_error)
        config = point.config
        rec["config"] = config_fingerprint(config)
        info = validate(config)
        measured = {k: prior[k] for k in MEASURED if k in prior}
        if not measured:  # a preempted attempt of the same config measured it already
            measured = measure.measure(config, info.num_classes, info.image_shape,
                                       throughput_steps=measure_cfg.get("throughput_steps", 5))
        rec.update(measured)
        start = _latest_step(workdir, config)
        results = train_and_evaluate(config, workdir)
        if "final" not in results:
            raise Preempted(f"point {point.name} was preempted; rerun the sweep to resume it")
        rec.update(_run_metrics(results, config, start))
        if sweep.get("eval_train"):
            model = evals.restore_final_model(config, workdir, info.num_classes)
            m = evals.evaluate(model, evals.train_split_config(config),
                               batch_size=config.eval_batch_size, prefix="train_eval/")
            rec.update(train_accuracy=m["train_eval/accuracy"], train_loss=m["train_eval/loss"])
        rec["status"] = "done"
    except Preempted:
        save_record({**rec, "status": "preempted", "wall_seconds": time.time() - t0}, workdir)
        raise
    except Exception as e:  # noqa: BLE001 -- any failure of one point must not stop the sweep
        rec.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000],
                   traceback="".join(traceback.format_exc().splitlines(True)[-12:]))
    rec["wall_seconds"] = time.time() - t0
    return rec


def _latest_step(workdir: Path, config: mlc.ConfigDict) -> int:
    if not (workdir / "checkpoints").exists():
        return 0
    ckpt = Checkpointer(workdir, **config.checkpoint)
    try:
        return ckpt.latest_step() or 0
    finally:
        ckpt.close()


def _run_metrics(results: dict, config: mlc.ConfigDict, start_step: int) -> dict:
    out = {}
    for which in ("final", "best"):
        r = results.get(which) or {}
        out[f"{which}_step"] = r.get("step")
        out[f"{which}_accuracy"] = r.get("eval/accuracy")
        out[f"{which}_loss"] = r.get("eval/loss")
    seconds = results.get("train_seconds")
    trained = config.total_steps - start_step
    if seconds and trained > 0:  # this call trained: includes compile, evals and checkpoints
        out["train_seconds"] = seconds
        out["train_img_s_run"] = trained * config.batch_size / seconds
    return out


def _record_of_same_config(point: Point, workdir: Path) -> dict | None:
    """The saved record of ``point`` if one exists and its config is unchanged since."""
    path = workdir / RECORD_FILE
    if not path.exists() or point.config is None:
        return None
    rec = json.loads(path.read_text())
    return rec if rec.get("config") == config_fingerprint(point.config) else None


def preempted_record(point: Point, workdir: Path) -> dict:
    """The record of a preempted earlier attempt of this point with the same config, or {}."""
    rec = _record_of_same_config(point, workdir)
    return rec if rec is not None and rec.get("status") == "preempted" else {}


def load_record(point: Point, workdir: Path) -> dict | None:
    """The finished record of ``point`` if its config is unchanged since it ran."""
    rec = _record_of_same_config(point, workdir)
    if rec is None or rec.get("status") != "done":
        return None
    return {**rec, "index": point.index, "name": point.name}


def save_record(rec: dict, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(rec, indent=2, default=str))
    tmp.replace(workdir / RECORD_FILE)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """'point k of n' lines with an ETA from the wall times of the points finished so far."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.walls = name, total, []
        self.t0 = time.time()

    def start(self, point: Point) -> None:
        log(f"[sweep {self.name}] point {point.index} of {self.total}: {point.name} "
            f"{point.delta or ''}")

    def done(self, point: Point, rec: dict, reloaded: bool = False) -> None:
        if rec.get("wall_seconds") is not None:
            self.walls.append(rec["wall_seconds"])
        left = self.total - point.index
        eta = (sum(self.walls) / len(self.walls) * left) if self.walls else float("nan")
        what = "reloaded (finished earlier)" if reloaded else rec["status"]
        acc = rec.get("final_accuracy")
        acc_text = f", final eval accuracy {acc:.4f}" if isinstance(acc, float) else ""
        err = f": {rec['error'][:300]}" if rec["status"] == "failed" else ""
        log(f"[sweep {self.name}] point {point.index} of {self.total} {point.name} {what}"
            f"{acc_text}{err} | wall {_hms(rec.get('wall_seconds') or 0)}, "
            f"sweep elapsed {_hms(time.time() - self.t0)}, "
            f"ETA {_hms(eta) if eta == eta else '?'} for {left} more")


def run_sweep(sweep: mlc.ConfigDict, workdir: str | Path) -> list[dict]:
    """Runs (or resumes) every point of ``sweep`` in ``workdir``; returns the point records and
    writes ``results.{json,csv,md}`` and the plots after every point."""
    workdir = Path(workdir).absolute()  # Orbax refuses relative checkpoint paths
    workdir.mkdir(parents=True, exist_ok=True)
    if sweep.get("kind", "grid") == "resolution":
        from vit_jax.sweep.resolution import run_resolution_sweep

        return run_resolution_sweep(sweep, workdir)
    (workdir / "sweep_config.json").write_text(sweep.to_json_best_effort(indent=2))
    points = expand_points(sweep)
    progress = Progress(sweep.name, len(points))
    records: list[dict] = []
    for point in points:
        pdir = workdir / "points" / point.name
        rec = load_record(point, pdir)
        if rec is not None:
            progress.done(point, rec, reloaded=True)
        else:
            progress.start(point)
            rec = run_point(point, pdir, sweep)
            save_record(rec, pdir)
            progress.done(point, rec)
            jax.clear_caches()  # compiled steps of finished points are not needed again
        records.append(rec)
        report.write_reports(records, sweep, workdir, total=len(points))
    failed = [r["name"] for r in records if r["status"] != "done"]
    log(f"[sweep {sweep.name}] finished {len(records) - len(failed)} of {len(records)} points"
        + (f"; failed: {', '.join(failed)} (errors in results.md)" if failed else "")
        + f". Results: {workdir}/results.md")
    return records
