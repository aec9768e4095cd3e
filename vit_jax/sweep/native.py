"""The native-resolution sweep: one packed-trained (NaViT) checkpoint evaluated at many token
budgets per image, NaViT's accuracy-vs-sequence-length curve.

Trains ``base`` (a ``data.packing`` config) as an ordinary point unless ``init_from`` names a
checkpoint, then evaluates that one checkpoint once per budget N of ``token_budgets``: every
eval image at its own aspect ratio resized to at most N patches (``pp``, a template with
``{max_tokens}`` and ``{patch}``), ``max_images`` per packed sequence
(``vit_jax.evaluators.packed``). Each point records accuracy, loss, the mean patches per image,
the padding fraction and the evaluation's images/s. ``compare``: a resolution sweep's
``results.json`` (a model trained at one fixed size, evaluated at other sizes with its learned
positions resampled), drawn beside the curve against patches per image.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import ml_collections as mlc

from vit_jax.config import model_patch_size, validate
from vit_jax.evaluators import ModelView, packed
from vit_jax.loading import load_model
from vit_jax.paths import absolute
from vit_jax.runtime import describe_host
from vit_jax.sweep import report
from vit_jax.sweep.one_checkpoint import run_on_one_checkpoint
from vit_jax.sweep.points import Point, attempt


def eval_section(sweep: mlc.ConfigDict, budget: int) -> dict:
    patch = model_patch_size(sweep.base)[0]
    return {"kind": "packed", "max_tokens": budget, "max_images": sweep.max_images,
            "pp": sweep.pp.format(max_tokens=budget, patch=patch)}


def eval_point(index: int, sweep: mlc.ConfigDict, budget: int) -> Point:
    """The base config with this budget's packed evaluation as its only eval (what the
    record's config says, so a changed budget, pp or max_images is a new point)."""
    config = copy.deepcopy(sweep.base)
    config.evals = mlc.ConfigDict({"native": eval_section(sweep, budget)}, type_safe=False)
    return Point(index, f"max_tokens={budget}", {"max_tokens": budget}, None, config)


def evaluate_point(point: Point, workdir: Path, sweep: mlc.ConfigDict, init_from: str,
                   budget: int) -> dict:
    """The checkpoint evaluated at ``budget`` patches per image; a failure is the record."""

    def body(rec: dict, earlier: dict) -> None:
        validate(point.config)
        rec["host"] = describe_host()
        model = load_model(init_from, verbose=False)
        evaluate = packed.from_config(point.config, "native", point.config.evals.native)
        view = ModelView.of(model)
        evaluate.compile(view)  # on one batch: the timed pass below is the steady state
        t0 = time.perf_counter()
        m = evaluate(view)
        seconds = time.perf_counter() - t0
        n = len(evaluate.batches(model).split.records)
        rec.update(final_accuracy=m["native/accuracy"], final_loss=m["native/loss"],
                   tokens=m["native/tokens"], padding=m["native/padding"],
                   eval_img_s=n / seconds)

    return attempt(point, workdir, body, max_tokens=budget)


def run(sweep: mlc.ConfigDict, workdir: Path) -> list[dict]:
    """The packed run (unless ``init_from``), then one evaluation per token budget."""
    budgets = list(sweep.token_budgets)
    if not budgets or not all(isinstance(b, int) and b >= 1 for b in budgets):
        raise ValueError(f"token_budgets={budgets!r} must be positive integers (patches per "
                         "image)")
    return run_on_one_checkpoint(
        sweep, workdir, run_name="navit", settings=budgets,
        point_for=lambda index, budget: eval_point(index, sweep, budget),
        evaluate=lambda point, pdir, init_from, budget: evaluate_point(
            point, pdir, sweep, init_from, budget),
        write_reports=write_reports)


# ----------------------------------------------------------------------------- report


def fixed_resolution(path: str | None) -> list[tuple[float, dict]]:
    """(patches per image, the compared resolution sweep's best row at that size): its model
    as is (no fine-tune), the best position-resampling method, and its own training size."""
    if not path:
        return []
    best: dict[int, dict] = {}  # patches per image -> best row
    for r in json.loads(absolute(path).read_text())["points"]:
        if r.get("status") != "done" or r.get("resolution") is None:
            continue
        model = r["config"]["model"]
        patches = r["tokens"] - int(model["class_token"]) - model["num_registers"]
        acc = r.get("noft_accuracy", r.get("final_accuracy"))
        if acc is not None and acc > best.get(patches, {}).get("accuracy", -1):
            best[patches] = {"accuracy": acc, "method": r.get("method", "trained")}
    return sorted(best.items())


def write_reports(records: list[dict], sweep: mlc.ConfigDict, workdir: Path) -> None:
    report.write_data(records, sweep, workdir)
    evals = sorted((r for r in records if r.get("max_tokens") and r["status"] == "done"),
                   key=lambda r: r["max_tokens"])
    others = fixed_resolution(sweep.get("compare"))
    lines = [f"# Sweep `{sweep.name}`", "", sweep.description, "",
             *report.base_summaries(sweep), "",
             f"Each eval image at its own aspect ratio within the budget, {sweep.max_images} "
             f"per packed sequence; pp `{sweep.pp}`.", ""]
    head = ["budget (patches/img)", "mean patches/img", "padding", "accuracy", "loss",
            "eval img/s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    for r in evals:
        lines.append("| " + " | ".join([
            str(r["max_tokens"]), f"{r['tokens']:.1f}", report.pct(r["padding"]),
            report.pct(r["final_accuracy"]), f"{r['final_loss']:.4f}",
            f"{r['eval_img_s']:.0f}"]) + " |")
    if others:
        lines += ["", f"Fixed-resolution ViT (`{sweep.compare}`): its one checkpoint at each "
                  "size as is, the best position-resampling method:", "",
                  "| patches/img | accuracy | method |", "|---:|---:|---|"]
        lines += [f"| {n} | {report.pct(o['accuracy'])} | {o['method']} |" for n, o in others]
    failed = [r for r in records if r["status"] != "done"]
    lines += [f"\n{r['name']}: {r['status']} {r.get('error', '')}" for r in failed]
    if _plot(evals, others, workdir / "accuracy_vs_tokens.png", sweep.name):
        lines += ["", "![accuracy_vs_tokens.png](accuracy_vs_tokens.png)"]
    lines += ["", *report.closing(records, sweep)]
    (workdir / "results.md").write_text("\n".join(lines) + "\n")


def _plot(evals: list[dict], others: list[tuple[float, dict]], path: Path, title: str) -> bool:
    if not evals:
        return False
    plt, fig, ax = report.new_figure()
    ax.plot([r["tokens"] for r in evals], [r["final_accuracy"] for r in evals], "o-",
            label="packed model, native aspect ratio (one checkpoint)")
    if others:
        ax.plot([n for n, _ in others], [o["accuracy"] for _, o in others], "s--",
                label="fixed-resolution ViT, positions resampled")
    ax.set_xscale("log")
    ticks = sorted({r["max_tokens"] for r in evals} | {n for n, _ in others})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("patches per image")
    ax.set_ylabel("eval accuracy")
    ax.legend(fontsize=8)
    report.save_figure(plt, fig, ax, path, f"{title}: accuracy vs patches per image")
    return True
