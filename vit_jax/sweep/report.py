"""A sweep's outputs: results.json / results.csv / results.md and PNG plots (matplotlib Agg)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections as mlc

from vit_jax.paths import atomic_write
from vit_jax.sweep import DEFAULT_PLOTS, DEFAULT_TABLE
from vit_jax.sweep.aggregate import aggregate, has_seeds, is_number

# (record key, markdown header, formatter); the CSV holds every key, the table these.
Column = tuple[str, str, Callable[[object], str]]


def _num(fmt: str) -> Callable[[object], str]:
    return lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def _wall(v) -> str:
    if v is None:
        return ""
    v = int(round(v))
    if v >= 3600:
        return f"{v // 3600}:{v // 60 % 60:02d}:{v % 60:02d}"
    return f"{v // 60}:{v % 60:02d}"


COLUMNS: dict[str, Column] = {c[0]: c for c in [
    ("name", "point", str),
    ("params", "params", _num("{:,}")),
    ("tokens", "tokens/img", _num("{:,}")),
    ("gflops", "GFLOPs/img (fwd)", _num("{:.4g}")),
    ("total_steps", "steps", _num("{:,.0f}")),
    ("train_tflops", "train TFLOPs", _num("{:.4g}")),
    ("peak_memory_mib", "train-step peak MiB", _num("{:,.0f}")),
    ("train_img_s", "train img/s", _num("{:,.1f}")),
    ("train_img_s_run", "train img/s (run)", _num("{:,.1f}")),
    ("eval_img_s", "eval img/s", _num("{:,.1f}")),
    ("wall_seconds", "wall", _wall),
    ("best_accuracy", "best eval acc", pct),
    ("best_step", "best step", _num("{}")),
    ("final_accuracy", "final eval acc", pct),
    ("final_loss", "final eval loss", _num("{:.4f}")),
    ("train_accuracy", "final train acc", pct),
    ("train_loss", "final train loss", _num("{:.4f}")),
    ("attn_entropy_first_init", "attn entropy L1 (init)", _num("{:.3f}")),
    ("attn_entropy_first", "attn entropy L1", _num("{:.3f}")),
    ("attn_entropy_last", "attn entropy last", _num("{:.3f}")),
    ("position_signal_init", "pos/patch RMS (init)", _num("{:.3g}")),
    ("position_signal", "pos/patch RMS", _num("{:.3g}")),
    ("model", "model", str),
    ("posemb", "posemb", str),
    ("position_locality_init", "position locality (init)", _num("{:.3f}")),
    ("position_locality", "position locality", _num("{:.3f}")),
    ("cls_attention_entropy", "class-token attn entropy (last)", _num("{:.3f}")),
    ("n", "n", _num("{}")),
    ("vs_top", "vs top (final acc, mean ± std)", str),
    ("status", "status", str),
]}
CSV_FIRST = ("index", "name", "group", "seed", "status", "params", "tokens", "gflops",
             "total_steps", "train_tflops", "peak_memory_mib",
             "train_img_s", "train_img_s_run", "eval_img_s", "wall_seconds", "train_seconds",
             "final_step", "final_accuracy", "final_loss", "best_step", "best_accuracy",
             "best_loss", "train_accuracy", "train_loss", "error")
NOT_IN_CSV = ("delta", "config", "traceback")
TEXT_COLUMNS = ("name", "status", "vs_top", "model", "posemb")


def delta_keys(records: Sequence[dict]) -> list[str]:
    keys: list[str] = []
    for r in records:
        keys += [k for k in (r.get("delta") or {}) if k not in keys]
    return keys


def csv_rows(records: Sequence[dict]) -> tuple[list[str], list[dict]]:
    """Flat rows: the fixed columns, one column per delta key, then anything else recorded."""
    dkeys = delta_keys(records)
    extra = sorted({k for r in records for k in r} - set(CSV_FIRST) - set(NOT_IN_CSV))
    header = list(CSV_FIRST[:2]) + dkeys + list(CSV_FIRST[2:]) + extra
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in NOT_IN_CSV}
        for k in dkeys:
            v = (r.get("delta") or {}).get(k, "")
            row[k] = json.dumps(v) if isinstance(v, list | tuple) else v
        rows.append(row)
    return header, rows


def markdown_table(records: Sequence[dict], columns: Sequence[str]) -> str:
    columns = [c for c in columns
               if c in ("name", "status") or any(r.get(c) is not None for r in records)]
    lines = ["| " + " | ".join(COLUMNS[c][1] for c in columns) + " |",
             "|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in columns) + "|"]
    for r in records:
        lines.append("| " + " | ".join(cell(r, c) for c in columns) + " |")
    return "\n".join(lines)


def cell(rec: dict, column: str) -> str:
    """The value, or (a seeds row whose seeds differ) mean ± std; columns not in ``COLUMNS``
    are accuracies."""
    fmt = COLUMNS[column][2] if column in COLUMNS else pct
    std = rec.get(f"{column}_std")
    if not std or rec.get("n", 1) < 2:
        return fmt(rec.get(column))
    if fmt is pct:
        return f"{100 * rec[column]:.2f} ± {100 * std:.2f}%"
    return f"{fmt(rec[column])} ± {fmt(std)}"


def write_data(records: Sequence[dict], sweep: mlc.ConfigDict, workdir: Path) -> None:
    """results.json (every record, with config and traceback) and results.csv (flat)."""
    atomic_write(workdir / "results.json", json.dumps(
        {"sweep": sweep.name, "points": list(records)}, indent=2, default=str))
    header, rows = csv_rows(records)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(workdir / "results.csv", text.getvalue())


def write_reports(records: Sequence[dict], sweep: mlc.ConfigDict, workdir: Path, *,
                  total: int | None = None) -> None:
    """results.json, results.csv, results.md (table + errors) and the plots."""
    workdir = Path(workdir)
    write_data(records, sweep, workdir)
    columns = tuple(sweep.get("table_columns") or DEFAULT_TABLE)
    rows = aggregate(records) if has_seeds(records) else list(records)
    plots = plot_all(rows, sweep, workdir)
    atomic_write(workdir / "results.md", markdown(records, sweep, columns, plots, total))


def markdown(records, sweep, columns, plots: Sequence[str], total: int | None) -> str:
    done = sum(r["status"] == "done" for r in records)
    parts = [f"# Sweep `{sweep.name}`", ""]
    if sweep.get("description"):
        parts += [sweep.description.strip(), ""]
    parts += base_summaries(sweep) + [budget_summary(sweep, records), ""]
    if total is not None and len(records) < total:
        parts += [f"*In progress: {len(records)} of {total} runs so far.*", ""]
    shown = [c for c in columns if any(r.get(c) is not None for r in records)]
    notes = " ".join(NOTES[c] for c in shown if c in NOTES)
    if has_seeds(records):
        rows = aggregate(records)
        seeds = ", ".join(str(s) for s in sweep.seeds)
        parts += [markdown_table(rows, _seed_columns(columns)), "",
                  f"Each point was run with seeds {seeds}; numbers are mean ± sample standard "
                  f"deviation over the n seeds that finished ({done} of {len(records)} runs). "
                  "'vs top' compares final eval accuracy: a point is called below the top one "
                  "only when its mean ± std interval does not overlap the top's. "
                  f"{notes}".strip(), "",
                  "<details><summary>Every run</summary>", "",
                  markdown_table(records, columns), "", "</details>", ""]
    else:
        parts += [markdown_table(records, columns), "",
                  f"{done} of {len(records)} points finished. {notes}".strip(), ""]
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        parts += ["## Failed points", ""]
        parts += [f"- `{r['name']}`: {' '.join(str(r.get('error', '')).split())}"
                  for r in failed]
        parts.append("")
    parts += [f"![{p}]({p})" for p in plots]
    parts += closing(records, sweep)
    return "\n".join(parts) + "\n"


def closing(records: Sequence[dict], sweep: mlc.ConfigDict) -> list[str]:
    """How long the runs took and on what, then the study's answer and its limits."""
    parts = []
    walls = [r["wall_seconds"] for r in records if r.get("wall_seconds")]
    hosts = sorted({r["host"] for r in records if r.get("host")})
    if walls:
        parts += ["", f"Ran {len(walls)} runs in {_wall(sum(walls))} of wall time (sum over runs)"
                  + (f" on {'; '.join(hosts)}." if hosts else ".")]
    for title, key in (("Answer", "conclusion"), ("What it does not show", "limits")):
        if sweep.get(key):
            parts += ["", f"## {title}", "", " ".join(sweep[key].split())]
    return parts


def _seed_columns(columns: Sequence[str]) -> list[str]:
    """A seeds table adds n and the separation test before the status."""
    columns = [c for c in columns if c != "status"]
    return columns + ["n", "vs_top", "status"]


def budget_summary(sweep: mlc.ConfigDict, records: Sequence[dict]) -> str:
    budget = sweep.get("budget") or {}
    if budget.get("kind", "steps") == "flops":
        return (f"Budget: equal training FLOPs: every point gets the compute of "
                f"`{budget.reference}` at its configured steps (steps = that budget / "
                "(forward FLOPs per image x batch); warmup scaled alike).")
    return "Budget: each point trains its configured steps."


def describe_config(c: mlc.ConfigDict) -> str:
    """One line with what a reader needs to reproduce a point: model, data, schedule."""
    m = c.model
    model = m.variant
    if m.get("width"):
        model += (f" (width {m.width}, depth {m.depth}, {m.num_heads} heads, MLP {m.mlp_dim}, "
                  f"patch {m.patch_size or m.variant.partition('/')[2]}, posemb {m.posemb})")
    data = c.data.name
    if data == "shapes":
        sh = c.data.shapes
        data += f" {sh.image_size}px ({sh.num_train:,} train / {sh.num_test:,} test)"
    if c.data.get("train_subset"):
        data += f", first {c.data.train_subset:,} training images"
    o = c.optim
    return (f"{model}; data {data}; {c.total_steps} steps of batch {c.batch_size}; "
            f"{o.name} lr {o.lr:g}, wd {o.weight_decay:g}, {o.schedule}, "
            f"warmup {o.warmup_steps}; seed {c.seed}.")


def base_summaries(sweep: mlc.ConfigDict) -> list[str]:
    bases = dict(sweep.get("bases") or {})
    if not bases:
        return [f"Base config: {describe_config(sweep.base)} Each point changes its delta."]
    return ["Base configs:", ""] + [f"- `{k}`: {describe_config(v)}" for k, v in bases.items()]


NOTES = {
    "gflops": "GFLOPs: XLA cost analysis of the forward pass on one image.",
    "peak_memory_mib": "Peak MiB: XLA memory analysis of one train step at the config's batch "
                       "size on one device.",
    "train_img_s": "Train/eval img/s: steady-state jitted steps on random data (compile and "
                   "input pipeline excluded), measured while other jobs may share the CPU.",
    "train_img_s_run": "'(run)' = steps x batch / the run's train seconds (includes compile, "
                       "evals, checkpoints).",
    "wall_seconds": "Wall: the whole point (measurements, training, evals).",
    "attn_entropy_first": "Attn entropy: mean entropy of the attention rows of the first / last "
                          "layer over ln(tokens), on 64 test images (1 = uniform).",
    "position_signal": "Pos/patch RMS: position embeddings' RMS over the patch embeddings' "
                       "RMS on those images.",
    "train_tflops": "Train TFLOPs: 3 x forward FLOPs x batch x steps (backward = 2x forward).",
    "train_accuracy": "Final train acc: the final model evaluated (eval preprocessing) on the "
                      "training examples.",
}


# ----------------------------------------------------------------------------- plots


def _x_value(rec: dict, key: str):
    v = (rec.get("delta") or {}).get(key, rec.get(key))
    if isinstance(v, list | tuple):
        v = v[0]
    return v


def new_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    return plt, fig, ax


def save_figure(plt, fig, ax, path: Path, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


ACCURACY_SERIES = (("best_accuracy", "best eval", "o-"), ("final_accuracy", "final eval", "s--"),
                   ("train_accuracy", "final train", "^:"))


def plot_xy(records, path: Path, *, x_key: str, x_label: str, log_x: bool,
            series: Sequence[tuple[str, str, str]], y_label: str, title: str,
            log_y: bool = False) -> bool:
    """One line per series over the points whose x is a number; bars if x is categorical."""
    done = [r for r in records if (r["status"] == "done" or r.get("n"))
            and _x_value(r, x_key) is not None]
    xs = [_x_value(r, x_key) for r in done]
    series = [s for s in series if any(is_number(r.get(s[0])) for r in done)]
    if not done or not series:
        return False
    plt, fig, ax = new_figure()
    if all(is_number(x) for x in xs):
        order = sorted(range(len(done)), key=lambda i: xs[i])
        for key, label, style in series:
            pts = [(xs[i], done[i][key], done[i].get(f"{key}_std") or 0.0)
                   for i in order if is_number(done[i].get(key))]
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], fmt=style, label=label,
                        yerr=[p[2] for p in pts] if any(p[2] for p in pts) else None,
                        capsize=3)
        for i in order:  # label each point with its name: tokens/FLOPs plots mix keys
            y = done[i].get(series[0][0])
            if is_number(y):
                ax.annotate(done[i]["name"], (xs[i], y), fontsize=6, alpha=0.7,
                            xytext=(3, 3), textcoords="offset points")
        if log_x:
            ax.set_xscale("log", base=2 if x_key.endswith("patch_size") else 10)
            ticks = sorted(set(xs))
            if len(ticks) <= 8:  # label the points' own values, not powers of ten
                ax.set_xticks(ticks, [f"{x:.3g}" for x in ticks])
                ax.set_xticks([], minor=True)
            if x_key.endswith("patch_size"):
                ax.invert_xaxis()  # smaller patches (more tokens) to the right
    else:
        width = 0.8 / len(series)
        for j, (key, label, _) in enumerate(series):
            ys = [r.get(key) if is_number(r.get(key)) else 0.0 for r in done]
            errs = [r.get(f"{key}_std") or 0.0 for r in done]
            pos = [i + (j - (len(series) - 1) / 2) * width for i in range(len(done))]
            bars = ax.bar(pos, ys, width, label=label, yerr=errs if any(errs) else None,
                          capsize=3)
            ax.bar_label(bars, labels=[f"{y:.1%}" if y <= 1 else f"{y:.3g}" for y in ys],
                         fontsize=6)
        labels = [str(x) for x in xs]
        crowded = sum(map(len, labels)) > 60  # e.g. six 'patch1,sincos2d' names overlap
        ax.set_xticks(range(len(done)), labels, rotation=25 if crowded else 0,
                      ha="right" if crowded else "center")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(fontsize=8)
    save_figure(plt, fig, ax, path, title)
    return True


def plot_all(records: Sequence[dict], sweep: mlc.ConfigDict, workdir: Path) -> list[str]:
    """Writes the plots the sweep asks for (``plots``) that its data supports; returns names."""
    x_key = sweep.get("x_key") or "name"
    x_label = sweep.get("x_label") or x_key
    wanted = tuple(sweep.get("plots") or DEFAULT_PLOTS)
    specs = {
        "accuracy_vs_x": (f"accuracy_vs_{x_key.rsplit('.', 1)[-1]}.png", x_key, x_label,
                          bool(sweep.get("log_x")), ACCURACY_SERIES, "accuracy", False),
        "accuracy_vs_tokens": ("accuracy_vs_tokens.png", "tokens", "tokens per image", True,
                               ACCURACY_SERIES, "accuracy", False),
        "accuracy_vs_gflops": ("accuracy_vs_gflops.png", "gflops",
                               "forward GFLOPs per image", True, ACCURACY_SERIES, "accuracy",
                               False),
        "throughput_vs_tokens": ("throughput_vs_tokens.png", "tokens", "tokens per image", True,
                                 (("train_img_s", "train step", "o-"),
                                  ("eval_img_s", "eval forward", "s--")),
                                 "images / second", True),
    }
    unknown = sorted(set(wanted) - set(specs))
    if unknown:
        raise ValueError(f"unknown plots {unknown} in sweep {sweep.name!r}; valid: {list(specs)}")
    made = []
    for name in wanted:
        fname, key, label, log_x, series, y_label, log_y = specs[name]
        ok = plot_xy(records, workdir / fname, x_key=key, x_label=label, log_x=log_x,
                     series=series, y_label=y_label, log_y=log_y,
                     title=f"{sweep.name}: {y_label} vs {label}")
        if ok:
            made.append(fname)
    return made
