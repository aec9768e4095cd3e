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
from pathlib import Path

import ml_collections as mlc

from vit_jax.config import validate
from vit_jax.evaluators import ModelView
from vit_jax.evaluators.classification import Classification
from vit_jax.loading import load_model
from vit_jax.logs import log
from vit_jax.paths import absolute, atomic_write
from vit_jax.runtime import describe_host
from vit_jax.sizes import as_pair
from vit_jax.sweep import DEFAULT_TABLE, flatten, grid, report
from vit_jax.sweep.aggregate import aggregate, has_seeds
from vit_jax.sweep.points import Point, Preempted, Progress, attempt, make_point, run_or_reload
from vit_jax.train import train_and_evaluate


def base_resolution(config: mlc.ConfigDict) -> int:
    return as_pair(config.model.image_size, "config.model.image_size")[0]


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


def run_point(point: Point, workdir: Path, sweep: mlc.ConfigDict, init_from: str, res: int,
              method: str) -> dict:
    """Evaluates the checkpoint at ``res`` (positions resampled by ``method``), then after a
    short fine-tune at ``res``; a failure comes back as the point's record."""

    def body(rec: dict, earlier: dict) -> None:
        config = point.config
        info = validate(config)
        rec["host"] = describe_host()
        model = load_model(init_from, image_size=res, posemb_resample=method)
        rec["tokens"] = _tokens(model)
        evaluate = Classification(config.data, batch_size=config.eval_batch_size)
        m = evaluate(ModelView.of(model))
        rec.update(noft_accuracy=m["eval/accuracy"], noft_loss=m["eval/loss"])
        del model
        if sweep.finetune_steps:
            results = train_and_evaluate(config, workdir)
            if "final" not in results:
                raise Preempted(f"point {point.name} was preempted; rerun the sweep to resume")
            final = results["final"]
            rec.update(ft_accuracy=final["eval/accuracy"], ft_loss=final["eval/loss"],
                       ft_seconds=results.get("train_seconds"), num_classes=info.num_classes)

    return attempt(point, workdir, body, resolution=res, method=method)


def run(sweep: mlc.ConfigDict, workdir: Path) -> list[dict]:
    """The base run (unless ``init_from`` is given), then every (resolution, method) point;
    with ``seeds``, all of that once per seed (each seed trains its own checkpoint)."""
    methods, resolutions = list(sweep.methods), list(sweep.resolutions)
    seeds = list(sweep.get("seeds") or [])
    if seeds and sweep.init_from:
        raise ValueError("a resolution sweep with seeds trains one checkpoint per seed: drop "
                         "init_from, or seeds to evaluate the one checkpoint")
    per_seed = len(methods) * len(resolutions) + (0 if sweep.init_from else 1)
    total = per_seed * max(len(seeds), 1)
    progress = Progress(sweep.name, total, log)
    records: list[dict] = []

    def finish(rec: dict) -> None:
        records.append(rec)
        write_reports(records, sweep, workdir, total)

    for seed in seeds or [None]:
        suffix, seeded = ("", {}) if seed is None else (f",seed={seed}", {"seed": seed})
        fields = {} if seed is None else {"seed": seed}
        init_from = str(absolute(sweep.init_from)) if sweep.init_from else None
        if not init_from:  # train the checkpoint first: an ordinary sweep point
            base = make_point(len(records) + 1, "base" + suffix, seeded, sweep.base,
                              **_group("base", seed))
            pdir = workdir / "points" / base.name
            rec = run_or_reload(base, pdir, lambda b=base, d=pdir: grid.run_point(b, d, sweep),
                                progress)
            finish({**rec, "resolution": base_resolution(sweep.base), **fields})
            if rec["status"] != "done":
                log(f"[sweep {sweep.name}] the base run {base.name} failed, nothing to "
                    f"evaluate: {rec['error']}")
                continue
            init_from = str(pdir)
        for res in resolutions:
            for method in methods:
                delta = {"model.image_size": res, "model.posemb_resample": method, **seeded}
                group = f"res={res},method={method}"
                try:
                    point = make_point(len(records) + 1, group + suffix, delta,
                                       finetune_config(sweep, res, method, init_from),
                                       **_group(group, seed))
                except (KeyError, AttributeError, TypeError, ValueError) as e:
                    point = Point(len(records) + 1, group + suffix, delta, None, None,
                                  f"{type(e).__name__}: bad finetune delta: {e}",
                                  **_group(group, seed))
                pdir = workdir / "points" / point.name
                finish(run_or_reload(point, pdir, lambda p=point, d=pdir, r=res, m=method,
                                     i=init_from: run_point(p, d, sweep, i, r, m), progress))
    log(f"[sweep {sweep.name}] finished. Results: {workdir}/results.md")
    return records


def _group(group: str, seed: int | None) -> dict:
    return {} if seed is None else {"group": group, "seed": seed}


# ----------------------------------------------------------------------------- report


def pivot_table(records: list[dict], methods: list[str]) -> str:
    """Rows: resolution; columns: accuracy per method without and with the fine-tune (mean ±
    std over seeds when the records are aggregated)."""
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
            if r.get("status") == "failed" or (r and r.get("n") == 0):
                cells += ["failed", "failed"]
            else:
                cells += [report.cell(r, "noft_accuracy"), report.cell(r, "ft_accuracy")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_resolution(records: list[dict], methods: list[str], path: Path, base_res: int,
                    title: str) -> bool:
    rows = [r for r in records if r.get("method") in methods
            and (r["status"] == "done" or r.get("n"))]
    if not rows:
        return False
    plt, fig, ax = report.new_figure()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        pts = sorted((r["resolution"], r) for r in rows if r["method"] == m)
        color = colors[i % len(colors)]
        for key, style, label in (("noft_accuracy", "o-", "no FT"), ("ft_accuracy", "s--", "FT")):
            xy = [(x, r[key], r.get(f"{key}_std") or 0.0) for x, r in pts
                  if r.get(key) is not None]
            if xy:
                xs, ys, errs = zip(*xy, strict=True)
                ax.errorbar(xs, ys, yerr=errs if any(errs) else None, fmt=style, color=color,
                            label=f"{m} ({label})", alpha=0.85, capsize=2)
    ax.axvline(base_res, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("eval resolution (pixels); dotted: trained at")
    ax.set_ylabel("eval accuracy")
    ax.legend(fontsize=6, ncol=2)
    report.save_figure(plt, fig, ax, path, title)
    return True


def write_reports(records: list[dict], sweep: mlc.ConfigDict, workdir: Path, total: int) -> None:
    report.write_data(records, sweep, workdir)
    runs, records = records, (aggregate(records) if has_seeds(records) else records)
    methods = list(sweep.methods)
    base_res = base_resolution(sweep.base)
    plotted = plot_resolution(records, methods, workdir / "accuracy_vs_resolution.png", base_res,
                              f"{sweep.name}: accuracy vs resolution")
    parts = [f"# Sweep `{sweep.name}`", ""]
    if sweep.get("description"):
        parts += [sweep.description.strip(), ""]
    if len(runs) < total:  # runs, not rows: a seeds table has one row per point
        parts += [f"*In progress: {len(runs)} of {total} points so far.*", ""]
    base = [r for r in records if r["name"] == "base"]
    if base:
        parts += ["Base run (the checkpoint):" if runs is records else
                  f"Base runs (one checkpoint per seed, seeds {list(sweep.seeds)}; mean ± std):",
                  "", report.markdown_table(base, DEFAULT_TABLE), ""]
    seeds = "" if runs is records else " Mean ± std over the seeds' checkpoints."
    trained = sweep.init_from or ("points/base" if runs is records else "points/base,seed=N")
    parts += [f"Checkpoint: `{trained}`, trained at {base_res}px. "
              f"Eval accuracy at each resolution; 'FT' = after {sweep.finetune_steps} "
              f"fine-tuning steps at that resolution.{seeds}", "",
              pivot_table(records, methods), ""]
    failed = [r for r in runs if r["status"] == "failed"]
    if failed:
        parts += ["## Failed points", ""] + [
            f"- `{r['name']}`: {' '.join(str(r.get('error')).split())}" for r in failed]
        parts.append("")
    if plotted:
        parts.append("![accuracy_vs_resolution.png](accuracy_vs_resolution.png)")
    parts += report.closing(runs, sweep)
    atomic_write(workdir / "results.md", "\n".join(parts) + "\n")
