"""The resolution sweep: one checkpoint evaluated at other resolutions, per resampling method.

For every resolution r and method m of ``resample.METHODS``: the checkpoint is loaded with its
learned positions resampled to the r grid by m (``vit_jax.load_model``) and evaluated as is
("no fine-tune"), then fine-tuned for ``finetune_steps`` at r (a normal training run with
``init_from`` = the checkpoint and ``model.posemb_resample`` = m, so it starts from the same
resampled table) and evaluated again. Without ``init_from`` the sweep first trains ``base``.

Sweep config keys: ``base`` (the training config; it must describe the checkpoint's model and
data), ``init_from`` (a workdir or checkpoint; None = train ``base`` first), ``resolutions``,
``methods``, ``pp_train`` / ``pp_eval`` (templates with ``{res}``), ``finetune`` (a flat delta
over ``base`` for the fine-tune runs, e.g. the optimizer) and ``finetune_steps`` (0 = skip).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import jax
import ml_collections as mlc

from vit_jax.config import validate
from vit_jax.sweep import DEFAULT_TABLE, evals, flatten, report
from vit_jax.sweep.runner import (
    Point,
    Preempted,
    Progress,
    config_fingerprint,
    load_record,
    preempted_record,
    run_point,
    save_record,
)
from vit_jax.train import log, train_and_evaluate


def base_resolution(config: mlc.ConfigDict) -> int:
    size = config.model.image_size
    return size if isinstance(size, int) else size[0]


def finetune_config(sweep: mlc.ConfigDict, res: int, method: str, init_from: str):
    """The fine-tune run at ``res`` with positions resampled by ``method`` at its start."""
    c = copy.deepcopy(sweep.base)
    c.update_from_flattened_dict(flatten(sweep.get("finetune")))
    steps = max(int(sweep.finetune_steps), 1)
    c.total_steps = steps
    c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = steps
    c.init_from = init_from
    c.model.image_size = res
    c.model.posemb_resample = method
    c.data.pp_train = sweep.pp_train.format(res=res)
    c.data.pp_eval = sweep.pp_eval.format(res=res)
    return c


def _tokens(model) -> int | None:
    grid = getattr(model, "grid", None)
    return grid[0] * grid[1] + model.num_prefix if grid is not None else None


def run_resolution_point(point: Point, workdir: Path, sweep: mlc.ConfigDict, init_from: str,
                         res: int, method: str) -> dict:
    from vit_jax.loading import load_model

    rec = {"index": point.index, "name": point.name, "delta": point.delta, "base": None,
           "status": "running", "workdir": str(workdir), "resolution": res, "method": method}
    t0 = time.time() - preempted_record(point, workdir).get("wall_seconds", 0.0)
    try:
        if point.config_error:
            raise ValueError(point.config_error)
        config = point.config
        rec["config"] = config_fingerprint(config)
        info = validate(config)
        model = load_model(init_from, image_size=res, posemb_resample=method)
        rec["tokens"] = _tokens(model)
        m = evals.evaluate(model, config.data, batch_size=config.eval_batch_size)
        rec.update(noft_accuracy=m["eval/accuracy"], noft_loss=m["eval/loss"])
        del model
        if sweep.finetune_steps:
            results = train_and_evaluate(config, workdir)
            if "final" not in results:
                raise Preempted(f"point {point.name} was preempted; rerun the sweep to resume")
            final = results["final"]
            rec.update(ft_accuracy=final["eval/accuracy"], ft_loss=final["eval/loss"],
                       ft_seconds=results.get("train_seconds"), num_classes=info.num_classes)
        rec["status"] = "done"
    except Preempted:
        save_record({**rec, "status": "preempted", "wall_seconds": time.time() - t0}, workdir)
        raise
    except Exception as e:  # noqa: BLE001 -- one point's failure must not stop the sweep
        import traceback

        rec.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000],
                   traceback="".join(traceback.format_exc().splitlines(True)[-12:]))
    rec["wall_seconds"] = time.time() - t0
    return rec


def run_resolution_sweep(sweep: mlc.ConfigDict, workdir: Path) -> list[dict]:
    (workdir / "sweep_config.json").write_text(sweep.to_json_best_effort(indent=2))
    methods, resolutions = list(sweep.methods), list(sweep.resolutions)
    total = len(methods) * len(resolutions) + (0 if sweep.init_from else 1)
    progress = Progress(sweep.name, total)
    records: list[dict] = []
    index = 0

    def finish(point, rec, reloaded):
        progress.done(point, rec, reloaded=reloaded)
        records.append(rec)
        write_reports(records, sweep, workdir, total)

    init_from = str(Path(sweep.init_from).expanduser().absolute()) if sweep.init_from else None
    if not init_from:  # train the checkpoint first: an ordinary sweep point
        index += 1
        base = Point(index, "base", {}, None, copy.deepcopy(sweep.base))
        pdir = workdir / "points" / "base"
        rec = load_record(base, pdir)
        reloaded = rec is not None
        if rec is None:
            progress.start(base)
            rec = run_point(base, pdir, sweep)
            save_record(rec, pdir)
            jax.clear_caches()
        finish(base, {**rec, "resolution": base_resolution(sweep.base)}, reloaded)
        if rec["status"] != "done":
            log(f"[sweep {sweep.name}] the base run failed, nothing to evaluate: {rec['error']}")
            return records
        init_from = str(pdir)
    for res in resolutions:
        for method in methods:
            index += 1
            name = f"res={res},method={method}"
            delta = {"model.image_size": res, "model.posemb_resample": method}
            try:
                point = Point(index, name, delta, None,
                              finetune_config(sweep, res, method, init_from))
            except (KeyError, AttributeError, TypeError, ValueError) as e:
                point = Point(index, name, delta, None, None,
                              f"{type(e).__name__}: bad finetune delta: {e}")
            pdir = workdir / "points" / name
            rec = load_record(point, pdir)
            reloaded = rec is not None
            if rec is None:
                progress.start(point)
                rec = run_resolution_point(point, pdir, sweep, init_from, res, method)
                save_record(rec, pdir)
                jax.clear_caches()
            finish(point, rec, reloaded)
    log(f"[sweep {sweep.name}] finished. Results: {workdir}/results.md")
    return records


# ----------------------------------------------------------------------------- report


def pivot_table(records: list[dict], methods: list[str]) -> str:
    """Rows: resolution; columns: accuracy per method without and with the fine-tune."""
    rows = [r for r in records if r.get("method") in methods]
    resolutions = sorted({r["resolution"] for r in rows})
    by = {(r["resolution"], r["method"]): r for r in rows}
    head = ["resolution", "tokens"] + [f"{m} {w}" for m in methods for w in ("no FT", "FT")]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    for res in resolutions:
        tokens = next((by[res, m].get("tokens") for m in methods
                       if (res, m) in by and by[res, m].get("tokens")), None)
        cells = [str(res), str(tokens or "")]
        for m in methods:
            r = by.get((res, m), {})
            if r.get("status") == "failed":
                cells += ["failed", "failed"]
            else:
                cells += [report.pct(r.get("noft_accuracy")), report.pct(r.get("ft_accuracy"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_resolution(records: list[dict], methods: list[str], path: Path, base_res: int,
                    title: str) -> bool:
    rows = [r for r in records if r.get("method") in methods and r["status"] == "done"]
    if not rows:
        return False
    plt, fig, ax = report.new_figure()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        pts = sorted((r["resolution"], r) for r in rows if r["method"] == m)
        color = colors[i % len(colors)]
        for key, style, label in (("noft_accuracy", "o-", "no FT"), ("ft_accuracy", "s--", "FT")):
            xy = [(x, r[key]) for x, r in pts if r.get(key) is not None]
            if xy:
                ax.plot(*zip(*xy, strict=True), style, color=color, label=f"{m} ({label})",
                        alpha=0.85)
    ax.axvline(base_res, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("eval resolution (pixels); dotted: trained at")
    ax.set_ylabel("eval accuracy")
    ax.legend(fontsize=6, ncol=2)
    report.save_figure(plt, fig, ax, path, title)
    return True


def write_reports(records: list[dict], sweep: mlc.ConfigDict, workdir: Path, total: int) -> None:
    report.write_data(records, sweep, workdir)
    methods = list(sweep.methods)
    base_res = base_resolution(sweep.base)
    plotted = plot_resolution(records, methods, workdir / "accuracy_vs_resolution.png", base_res,
                              f"{sweep.name}: accuracy vs resolution")
    parts = [f"# Sweep `{sweep.name}`", ""]
    if sweep.get("description"):
        parts += [sweep.description.strip(), ""]
    if len(records) < total:
        parts += [f"*In progress: {len(records)} of {total} points so far.*", ""]
    base = [r for r in records if r["name"] == "base"]
    if base:
        parts += ["Base run (the checkpoint):", "",
                  report.markdown_table(base, DEFAULT_TABLE), ""]
    parts += [f"Checkpoint: `{sweep.init_from or 'points/base'}`, trained at {base_res}px. "
              f"Eval accuracy at each resolution; 'FT' = after {sweep.finetune_steps} "
              "fine-tuning steps at that resolution.", "", pivot_table(records, methods), ""]
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        parts += ["## Failed points", ""] + [
            f"- `{r['name']}`: {' '.join(str(r.get('error')).split())}" for r in failed]
        parts.append("")
    if plotted:
        parts.append("![accuracy_vs_resolution.png](accuracy_vs_resolution.png)")
    report.atomic_write(workdir / "results.md", "\n".join(parts) + "\n")
