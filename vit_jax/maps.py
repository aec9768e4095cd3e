"""Where trained models look and what their positions learned, from their own checkpoints.

    python -m vit_jax.maps --workdir=runs/quickstart --out=runs/quickstart/maps
    python -m vit_jax.maps --workdir=runs/sweeps/vit_vs_cnn_mnist --out=DIR   # a whole sweep

Seed 004's analyses, for every model a run or a sweep trained, on the first eval images:
- for every model (ViT or CNN): the input-gradient saliency of the true class, the one map a
  CNN and a ViT share;
- for a ViT: the class token's last-layer attention over the patch grid (per head, and averaged
  over the images), attention rollout through all layers, attention entropy per layer;
- for a ViT with a position table (``learn`` or ``sincos2d``): the cosine similarity of each
  position's embedding to the centre one and to all others (grid heatmaps), similarity against
  grid distance after training and at initialisation, and ``position locality`` (the correlation
  of similarity with nearness: ~0 for a random table, 1 for a perfectly 2D-ordered one).

Writes ``maps.md`` (a table per run, mean ± std over the seeds of a sweep point), ``maps.json``
and PNG figures into ``--out``: ``<run>.png`` and ``<run>_positions.png`` for one seed per point
(the lowest), numbers for all.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import ml_collections as mlc
import numpy as np

from vit_jax import analysis, cli, data, loading, paths
from vit_jax.config import build_model

IMAGES = 64  # the images attention entropy and mean maps are averaged over
COLUMNS = ("name", "model", "posemb", "position_locality_init", "position_locality",
           "attn_entropy_first", "attn_entropy_last", "cls_attention_entropy")


@dataclass(frozen=True)
class Run:
    name: str
    path: Path
    group: str | None = None  # the sweep point a seeded run belongs to
    seed: int | None = None


def runs_in(workdir: str | Path) -> list[Run]:
    """The finished runs of a sweep workdir (its ``results.json``), or the one run in a training
    workdir; a directory that is neither is an error naming both."""
    path = paths.absolute(workdir)
    if (path / "sweep_config.json").is_file():
        results = path / "results.json"
        records = json.loads(results.read_text())["points"] if results.is_file() else []
        runs = [Run(r["name"], Path(r["workdir"]), r.get("group"), r.get("seed"))
                for r in records if r.get("status") == "done"]
        if not runs:
            raise ValueError(f"{workdir}: the sweep has no finished point yet")
        return runs
    if (path / "checkpoints").is_dir():
        return [Run(path.name, path)]
    raise ValueError(f"{workdir}: neither a training workdir (no checkpoints/) nor a sweep "
                     "workdir (no results.json)")


def measure(run: Run, config: mlc.ConfigDict, images: np.ndarray,
            labels: np.ndarray) -> tuple[dict, dict]:
    """(numbers, maps) of one run (``config``: its saved config) on ``images``: see the module
    docstring."""
    model = loading.load_model(run.path, verbose=False)
    numbers = {"name": run.name, "group": run.group, "seed": run.seed, "status": "done",
               "model": config.model.variant}
    maps = {"saliency": analysis.input_saliency(model, images, labels)}
    if not hasattr(model, "posemb"):  # a CNN: no attention, no position table
        maps["prediction"] = np.asarray(model(images)).argmax(-1)
        return numbers, maps
    numbers["posemb"] = model.posemb.kind
    logits, extras = model(images, return_attention=True)
    maps["prediction"] = np.asarray(logits).argmax(-1)
    attention = np.asarray(extras["attention"], np.float64)
    entropy = analysis.attention_entropy(attention)
    numbers.update(attn_entropy_first=float(entropy[0]), attn_entropy_last=float(entropy[-1]))
    if model.num_prefix >= 1:
        heads = analysis.class_token_attention(attention, model.num_prefix, model.grid)
        maps["cls_attention"] = heads  # (batch, heads, gh, gw)
        maps["rollout"] = analysis.attention_rollout(attention, model.num_prefix, model.grid)
        p = heads.reshape(*heads.shape[:2], -1)  # over the patches, the class token left out
        numbers["cls_attention_entropy"] = float(
            analysis.normalized_entropy(p / p.sum(-1, keepdims=True)).mean())
    if model.posemb.kind in ("learn", "sincos2d"):
        for suffix, m in (("", model), ("_init", build_model(config, _classes(model)))):
            similarity = analysis.position_similarity(analysis.patch_position_table(m))
            numbers[f"position_locality{suffix}"] = analysis.position_locality(similarity)
            maps[f"similarity{suffix}"] = similarity
    return numbers, maps


def _classes(model) -> int:
    return int(model.head.kernel.shape[-1])


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(ax, image: np.ndarray, title: str = "", **kwargs) -> None:
    ax.imshow(image, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An eval image (value range about [-1, 1]) as matplotlib shows it, with its colour map."""
    image = np.clip((image - image.min()) / max(np.ptp(image), 1e-12), 0, 1)
    return (image[..., 0], "gray") if image.shape[-1] == 1 else (image, None)


def figure_maps(run: Run, maps: dict, images: np.ndarray, labels: np.ndarray, path: Path,
                shown: int) -> None:
    """Rows: the images (label -> prediction), saliency, class-token attention (heads
    averaged), rollout, and the heads' maps averaged over all ``IMAGES`` images."""
    plt = _pyplot()
    rows = [("saliency", maps["saliency"])]
    if "cls_attention" in maps:
        rows += [("class-token attention, last layer", maps["cls_attention"].mean(1)),
                 ("attention rollout", maps["rollout"])]
    heads = maps["cls_attention"].mean(0) if "cls_attention" in maps else None
    cols = max(shown, 0 if heads is None else len(heads))
    nrows = 1 + len(rows) + (heads is not None)
    fig, axes = plt.subplots(nrows, cols, figsize=(1.5 * cols, 1.6 * nrows), dpi=100,
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(shown):
        image, cmap = _display(images[i])
        _show(axes[0, i], image, f"{labels[i]} -> {maps['prediction'][i]}", cmap=cmap)
        for r, (title, values) in enumerate(rows, start=1):
            grid = analysis.upsample_map(values[i], images.shape[1:3]) \
                if values[i].shape != images.shape[1:3] else values[i]
            _show(axes[r, i], image, cmap=cmap, alpha=0.5)
            axes[r, i].imshow(grid, cmap="inferno", alpha=0.6)
            if i == 0:
                axes[r, i].set_title(title, fontsize=8, loc="left")
    if heads is not None:
        for h, values in enumerate(heads):
            _show(axes[-1, h], values, f"head {h} (mean of {len(images)})", cmap="inferno")
    fig.suptitle(run.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mosaic(similarity: np.ndarray) -> np.ndarray:
    """(gh, gw, gh, gw) -> one image of gh x gw small maps separated by blank lines."""
    gh, gw = similarity.shape[:2]
    out = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
    for i in range(gh):
        for j in range(gw):
            out[i * (gh + 1):i * (gh + 1) + gh, j * (gw + 1):j * (gw + 1) + gw] = similarity[i, j]
    return out


def figure_positions(run: Run, maps: dict, numbers: dict, path: Path) -> None:
    """Similarity to the centre position, every position's similarity map, and similarity
    against grid distance (trained and at initialisation)."""
    plt = _pyplot()
    sim = maps["similarity"]
    gh, gw = sim.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=100)
    _show(axes[0], sim[gh // 2, gw // 2], f"similarity to centre ({gh // 2}, {gw // 2})",
          cmap="viridis", vmin=-1, vmax=1)
    _show(axes[1], _mosaic(sim), "every position's similarity map", cmap="viridis",
          vmin=-1, vmax=1)
    for suffix, label, style in (("", "trained", "o-"), ("_init", "initialisation", "s--")):
        d, s = analysis.similarity_by_distance(maps[f"similarity{suffix}"])
        axes[2].plot(d, s, style, ms=3,
                     label=f"{label} (locality {numbers[f'position_locality{suffix}']:.2f})")
    axes[2].set_xlabel("grid distance")
    axes[2].set_ylabel("mean cosine similarity")
    axes[2].grid(True, alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{run.name}: position embeddings ({numbers['posemb']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- report


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,-]+", "_", name)


def report(records: list[dict], figures: list[str], sources: list[str]) -> str:
    from vit_jax.sweep import aggregate
    from vit_jax.sweep.report import markdown_table

    lines = [f"# Maps of {', '.join(sources)}", "",
             f"On the first {IMAGES} eval images (`python -m vit_jax.maps`). Position locality: "
             "correlation of position-embedding similarity with nearness on the grid (0 = none, "
             "1 = similarity falls linearly with distance); attention entropy: mean row entropy "
             "/ ln(tokens) (1 = uniform).", ""]
    if aggregate.has_seeds(records):
        rows = aggregate.aggregate(records)
        columns = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
        lines += ["## Mean ± std over seeds", "",
                  markdown_table(rows, [*columns, "n"]), ""]
        lines += ["## Every run", ""]
    columns = [c for c in COLUMNS if any(r.get(c) is not None for r in records)]
    lines += [markdown_table(records, columns), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit_jax.maps", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, action="append",
                   help="a training or sweep workdir (repeat for several)")
    p.add_argument("--out", required=True, help="where maps.md, maps.json and the PNGs go")
    p.add_argument("--shown", type=int, default=6, help="images shown per figure (default 6)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    errors, runs = [], []
    for workdir in args.workdir:
        try:
            runs += runs_in(workdir)
        except ValueError as e:
            errors.append(str(e))
    if not 1 <= args.shown <= IMAGES:
        errors.append(f"--shown={args.shown}: must be 1 to {IMAGES}")
    if errors:  # every bad input at once, before any model is loaded
        for error in errors:
            cli.print_error(error)
        return 2
    out = paths.absolute(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first_seed: dict[str, Run] = {}
    for run in runs:
        if run.group is not None:
            first_seed.setdefault(run.group, run)
    records, figures = [], []
    for i, run in enumerate(runs, 1):
        config = loading.load_config(run.path)
        batch = data.first_eval_batch(config.data, IMAGES)
        images, labels = batch["image"], batch["label"]
        numbers, maps = measure(run, config, images, labels)
        records.append(numbers)
        drawn = run.group is None or first_seed[run.group] is run
        if drawn:
            name = _file_name(run.name)
            figure_maps(run, maps, images, labels, out / f"{name}.png", args.shown)
            figures.append(f"{name}.png")
            if "similarity" in maps:
                figure_positions(run, maps, numbers, out / f"{name}_positions.png")
                figures.append(f"{name}_positions.png")
        print(f"[maps] {i}/{len(runs)} {run.name}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in numbers.items() if isinstance(v, float))
            + (" (figures)" if drawn else ""), flush=True)
    (out / "maps.json").write_text(json.dumps(records, indent=1) + "\n")
    (out / "maps.md").write_text(report(records, figures, args.workdir))
    print(f"[maps] wrote {out / 'maps.md'} and {len(figures)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
