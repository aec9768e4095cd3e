"""The grid sweep: every point trained (or resumed), measured and evaluated, then tabulated."""

from __future__ import annotations

from pathlib import Path

import ml_collections as mlc

from vit_jax.checkpoints import complete_steps
from vit_jax.config import validate
from vit_jax.evaluators import ModelView
from vit_jax.evaluators.classification import Classification
from vit_jax.loading import load_model
from vit_jax.logs import log
from vit_jax.runtime import describe_host
from vit_jax.sweep import measure, report
from vit_jax.sweep.budget import apply_budget
from vit_jax.sweep.internals import internals
from vit_jax.sweep.points import (
    Point,
    Preempted,
    Progress,
    attempt,
    expand_points,
    run_or_reload,
)
from vit_jax.train import train_and_evaluate

MEASURED = ("params", "tokens", "gflops", "peak_memory_mib", "train_img_s", "eval_img_s")


def run_point(point: Point, workdir: Path, sweep: mlc.ConfigDict) -> dict:
    """Trains (or resumes) one point and measures it; a failure comes back as its record."""

    def body(rec: dict, earlier: dict) -> None:
        config = point.config
        info = validate(config)
        measured = {k: earlier[k] for k in MEASURED if k in earlier}
        if not measured:  # a preempted attempt of the same config measured it already
            steps = (sweep.get("measure") or {}).get("throughput_steps", 5)
            measured = measure.measure(config, info.num_classes, info.image_shape,
                                       throughput_steps=steps)
        rec.update(measured)
        rec["total_steps"], rec["host"] = config.total_steps, describe_host()
        if measured.get("gflops"):  # training ~ 3x the forward pass (backward = 2x)
            rec["train_tflops"] = 3 * measured["gflops"] * config.batch_size \
                * config.total_steps / 1e3
        steps = complete_steps(workdir)
        results = train_and_evaluate(config, workdir)
        if "final" not in results:
            raise Preempted(f"point {point.name} was preempted; rerun the sweep to resume it")
        rec.update(_run_metrics(results, config, steps[-1] if steps else 0))
        if sweep.get("eval_train"):
            rec.update(_train_accuracy(config, workdir))
        if (sweep.get("measure") or {}).get("internals"):
            rec.update(internals(config, workdir, info.num_classes))

    return attempt(point, workdir, body)


def _train_accuracy(config: mlc.ConfigDict, workdir: Path) -> dict:
    """The final model's accuracy on the examples it trained on (without augmentation)."""
    subset = config.data.get("train_subset")
    split = f"{config.data.train_split}[:{subset}]" if subset else config.data.train_split
    evaluate = Classification(config.data, batch_size=config.eval_batch_size, split=split,
                              prefix="train_eval/")
    m = evaluate(ModelView.of(load_model(workdir, verbose=False)))
    return dict(train_accuracy=m["train_eval/accuracy"], train_loss=m["train_eval/loss"])


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


def run(sweep: mlc.ConfigDict, workdir: Path) -> list[dict]:
    """Runs (or resumes) every point; writes the reports after each."""
    points = apply_budget(expand_points(sweep), sweep)
    progress = Progress(sweep.name, len(points), log)
    records: list[dict] = []
    for point in points:
        pdir = workdir / "points" / point.name
        records.append(run_or_reload(point, pdir, lambda p=point, d=pdir: run_point(p, d, sweep),
                                     progress))
        report.write_reports(records, sweep, workdir, total=len(points))
    failed = [r["name"] for r in records if r["status"] != "done"]
    log(f"[sweep {sweep.name}] finished {len(records) - len(failed)} of {len(records)} points"
        + (f"; failed: {', '.join(failed)} (errors in results.md)" if failed else "")
        + f". Results: {workdir}/results.md")
    return records
