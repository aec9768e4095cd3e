"""The FlexiViT sweep: one model trained at random patch sizes, evaluated at every one of them.

Trains ``base`` (a config with ``model.flexi_patch_sizes``) as an ordinary point unless
``init_from`` names a checkpoint, then evaluates that one checkpoint at each of
``patch_sizes`` (default: the model's flexi sizes): accuracy and loss on the eval split, tokens
and forward GFLOPs per image (XLA's count, as the patch-size sweep measures its points).
``compare``: the ``results.json`` of a patch-size sweep on the same data and steps, whose
separately trained models are drawn beside the FlexiViT curve, against patch size and against
GFLOPs, and tabled next to it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import ml_collections as mlc

from vit_jax.config import validate
from vit_jax.evaluators import ModelView
from vit_jax.evaluators.classification import Classification
from vit_jax.loading import load_model
from vit_jax.paths import absolute
from vit_jax.runtime import describe_host
from vit_jax.sizes import as_pair
from vit_jax.sweep import measure, report
from vit_jax.sweep.aggregate import aggregate, has_seeds
from vit_jax.sweep.one_checkpoint import run_on_one_checkpoint
from vit_jax.sweep.points import Point, attempt, make_point


def eval_config(base: mlc.ConfigDict, patch: int) -> mlc.ConfigDict:
    """``base`` as the model it is at ``patch``: what its tokens and FLOPs are counted on."""
    c = copy.deepcopy(base)
    c.model.patch_size = patch
    c.model.flexi_patch_sizes, c.model.flexi_weights = (), ()
    return c


def evaluate_point(point: Point, workdir: Path, sweep: mlc.ConfigDict, init_from: str,
                   patch: int) -> dict:
    """The checkpoint evaluated at ``patch``; a failure comes back as the point's record."""

    def body(rec: dict, earlier: dict) -> None:
        info = validate(point.config)
        rec["host"] = describe_host()
        h, w = as_pair(point.config.model.image_size, "model.image_size")
        model = load_model(init_from, verbose=False)
        rec["tokens"] = (h // patch) * (w // patch) + model.num_prefix
        rec["gflops"] = measure.forward_flops(point.config, info.num_classes,
                                              info.image_shape) / 1e9
        evaluate = Classification(sweep.base.data, batch_size=sweep.base.eval_batch_size,
                                  patch_size=patch)
        m = evaluate(ModelView.of(model))
        rec.update(final_accuracy=m["eval/accuracy"], final_loss=m["eval/loss"])

    return attempt(point, workdir, body, patch_size=patch)


def run(sweep: mlc.ConfigDict, workdir: Path) -> list[dict]:
    """The FlexiViT run (unless ``init_from``), then one evaluation per patch size."""
    sizes = list(sweep.patch_sizes or sweep.base.model.flexi_patch_sizes)
    if not sizes:
        raise ValueError("a flexi sweep needs patch_sizes or a base with "
                         "model.flexi_patch_sizes")
    return run_on_one_checkpoint(
        sweep, workdir, run_name="flexivit", settings=sizes,
        point_for=lambda index, patch: make_point(
            index, f"patch_size={patch}", {"model.patch_size": patch},
            eval_config(sweep.base, patch)),
        evaluate=lambda point, pdir, init_from, patch: evaluate_point(
            point, pdir, sweep, init_from, patch),
        write_reports=write_reports)


# ----------------------------------------------------------------------------- report


def separately_trained(path: str | None) -> dict[int, dict]:
    """patch size -> the compared sweep's row (mean ± std over its seeds where it has them)."""
    if not path:
        return {}
    records = json.loads(absolute(path).read_text())["points"]
    rows = aggregate(records) if has_seeds(records) else records
    out = {}
    for r in rows:
        patch = (r.get("delta") or {}).get("model.patch_size")
        if patch is not None and r.get("final_accuracy") is not None:
            out[int(patch)] = r
    return out


def write_reports(records: list[dict], sweep: mlc.ConfigDict, workdir: Path) -> None:
    report.write_data(records, sweep, workdir)
    evals = sorted((r for r in records if r.get("patch_size") and r["status"] == "done"),
                   key=lambda r: -r["patch_size"])
    others = separately_trained(sweep.get("compare"))
    lines = [f"# Sweep `{sweep.name}`", "", sweep.description, "",
             *report.base_summaries(sweep), ""]
    head = ["patch", "tokens/img", "GFLOPs/img (fwd)", "FlexiViT acc", "FlexiViT loss"]
    if others:
        head += ["separately trained acc"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    for r in evals:
        cells = [str(r["patch_size"]), report.cell(r, "tokens"), report.cell(r, "gflops"),
                 report.pct(r["final_accuracy"]), f"{r['final_loss']:.4f}"]
        if others:
            other = others.get(r["patch_size"])
            cells.append(report.cell(other, "final_accuracy") if other else "")
        lines.append("| " + " | ".join(cells) + " |")
    if others:
        lines += ["", f"Separately trained: `{sweep.compare}` (one model per patch size, "
                  "final eval accuracy, mean ± std over its seeds where it has them)."]
    failed = [r for r in records if r["status"] != "done"]
    lines += [f"\n{r['name']}: {r['status']} {r.get('error', '')}" for r in failed]
    for name, x_key, x_label, log_x in (("accuracy_vs_patch_size", "patch_size", "patch size",
                                         True),
                                        ("accuracy_vs_gflops", "gflops",
                                         "forward GFLOPs per image", True)):
        if _plot(evals, others, workdir / f"{name}.png", x_key, x_label, log_x, sweep.name):
            lines += ["", f"![{name}.png]({name}.png)"]
    lines += ["", *report.closing(records, sweep)]
    (workdir / "results.md").write_text("\n".join(lines) + "\n")


def _plot(evals: list[dict], others: dict[int, dict], path: Path, x_key: str, x_label: str,
          log_x: bool, title: str) -> bool:
    if not evals:
        return False
    plt, fig, ax = report.new_figure()
    ax.plot([r[x_key] for r in evals], [r["final_accuracy"] for r in evals], "o-",
            label="FlexiViT (one model)")
    rows = sorted(((p, r) for p, r in others.items()
                   if x_key == "patch_size" or r.get(x_key) is not None), key=lambda t: -t[0])
    if rows:
        xs = [p if x_key == "patch_size" else r[x_key] for p, r in rows]
        ax.errorbar(xs, [r["final_accuracy"] for _, r in rows],
                    yerr=[r.get("final_accuracy_std") or 0.0 for _, r in rows], fmt="s--",
                    capsize=2, label="separately trained")
    if log_x:
        ax.set_xscale("log")
    if x_key == "patch_size":
        ax.invert_xaxis()
        ticks = sorted({r["patch_size"] for r in evals})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(x_label)
    ax.set_ylabel("eval accuracy")
    ax.legend(fontsize=8)
    report.save_figure(plt, fig, ax, path, f"{title}: {path.stem.replace('_', ' ')}")
    return True
