"""The study protocol of the sweep harness: seeds, equal-FLOPs budgets, mean ± std tables."""

import csv
import json
from pathlib import Path

import pytest

from tests.helpers import tiny_config
from vit_jax.config import load_config_file
from vit_jax.sweep import expand_points, resolution_sweep_config, sweep_config
from vit_jax.sweep.aggregate import aggregate
from vit_jax.sweep.budget import apply_budget
from vit_jax.sweep.report import closing
from vit_jax.sweep.runner import run_sweep

REPO = Path(__file__).resolve().parent.parent

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def base(**changes):
    return tiny_config(**{"total_steps": 40, "optim.warmup_steps": 8, **changes})


def test_seeds_expand_seed_major_with_one_group_per_point():
    sweep = sweep_config("s", base(), [{"model.patch_size": 4}, {"model.patch_size": 2}],
                         seeds=[0, 5, 7])
    points = expand_points(sweep)
    assert [p.name for p in points] == [
        "patch_size=4,seed=0", "patch_size=2,seed=0", "patch_size=4,seed=5",
        "patch_size=2,seed=5", "patch_size=4,seed=7", "patch_size=2,seed=7"]
    assert [p.index for p in points] == [1, 2, 3, 4, 5, 6]
    assert [(p.group, p.seed, p.config.seed) for p in points[:3]] == [
        ("patch_size=4", 0, 0), ("patch_size=2", 0, 0), ("patch_size=4", 5, 5)]
    assert points[2].delta == {"model.patch_size": 4, "seed": 5}
    with pytest.raises(ValueError, match=r"seeds must be distinct ints >= 0, got \[1, 1\]"):
        expand_points(sweep_config("s", base(), [{}], seeds=[1, 1]))
    with pytest.raises(ValueError, match="sets 'seed' while the sweep has seeds"):
        expand_points(sweep_config("s", base(), [{"seed": 3}], seeds=[1]))


def test_flops_budget_gives_each_point_the_references_compute():
    sweep = sweep_config("b", base(), [
        {"model.patch_size": 4}, {"model.patch_size": 2}, {"name": "fixed", "total_steps": 9}],
        seeds=[0, 1], budget={"kind": "flops", "reference": "patch_size=4"})
    cost = {4: 1e6, 2: 4e6}
    points = apply_budget(expand_points(sweep), sweep,
                          flops_of=lambda c: cost.get(c.model.patch_size, 1e6))
    by_name = {p.name: p for p in points}
    ref, small = by_name["patch_size=4,seed=1"], by_name["patch_size=2,seed=1"]
    assert (ref.config.total_steps, ref.config.optim.warmup_steps) == (40, 8)
    assert (small.config.total_steps, small.config.optim.warmup_steps) == (10, 2)
    assert small.delta == {"model.patch_size": 2, "seed": 1, "total_steps": 10,
                           "optim.warmup_steps": 2}
    assert by_name["fixed,seed=0"].config.total_steps == 9  # a point's own steps are kept
    assert small.name == "patch_size=2,seed=1"  # the budget does not rename a point
    with pytest.raises(ValueError, match=r"budget.reference 'nope' is not a point; points: "):
        apply_budget(expand_points(sweep), sweep_config(
            "b", base(), [{}], budget={"kind": "flops", "reference": "nope"}))
    with pytest.raises(ValueError, match=r"budget.kind 'tokens'; valid: steps, flops"):
        apply_budget([], sweep_config("b", base(), [], budget={"kind": "tokens"}))


def test_flops_budget_uses_xlas_count_by_default():
    sweep = sweep_config("b", base(), [{"model.patch_size": 4}, {"model.patch_size": 2}],
                         budget={"kind": "flops", "reference": "patch_size=4"})
    from vit_jax.sweep.budget import _forward_flops

    ref, small = apply_budget(expand_points(sweep), sweep)
    ratio = _forward_flops(small.config) / _forward_flops(ref.config)
    assert ratio > 2  # 17 tokens against 5
    assert small.config.total_steps == round(40 / ratio)


def _rec(group, seed, acc, status="done"):
    return {"name": f"{group},seed={seed}", "group": group, "seed": seed, "status": status,
            "delta": {"x": group, "seed": seed}, "final_accuracy": acc, "params": 100}


def test_aggregate_means_stds_and_separation():
    rows = aggregate([_rec("a", 0, 0.90), _rec("b", 0, 0.80), _rec("c", 0, 0.50),
                      _rec("a", 1, 0.92), _rec("b", 1, 0.90), _rec("c", 1, 0.52),
                      _rec("a", 2, 0.94), _rec("b", 2, 0.85), _rec("c", 2, 0.0, "failed")])
    a, b, c = rows
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert a["final_accuracy"] == pytest.approx(0.92) and a["final_accuracy_std"] == \
        pytest.approx(0.02)
    assert (a["n"], c["n"], c["runs"], c["status"]) == (3, 2, 3, "2 of 3 done")
    assert a["params"] == 100 and isinstance(a["params"], int) and a["params_std"] == 0.0
    assert a["delta"] == {"x": "a"}
    assert (a["vs_top"], b["vs_top"], c["vs_top"]) == ("top", "overlaps top",
                                                        "below top (separated)")


def test_seeds_sweep_reports_mean_std_budget_and_answer(tmp_path):
    small = tiny_config(**{"total_steps": 4, "eval_every_steps": 4, "checkpoint_every_steps": 4,
                           "log_every_steps": 2, "model.depth": 1, "optim.warmup_steps": 1})
    sweep = sweep_config("proto", small, [{"model.patch_size": 4}, {"model.patch_size": 2}],
                         x_key="model.patch_size", seeds=[0, 1],
                         budget={"kind": "flops", "reference": "patch_size=2"},
                         measure={"throughput_steps": 0, "internals": True},
                         conclusion="Smaller patches win here.", limits="Tiny data.")
    records = run_sweep(sweep, tmp_path)
    assert [r["status"] for r in records] == ["done"] * 4, [r.get("error") for r in records]
    p4, p2 = records[0], records[1]
    assert p2["total_steps"] == 4 and p4["total_steps"] > 4  # cheaper point, more steps
    assert p4["train_tflops"] == pytest.approx(p2["train_tflops"], rel=0.25)
    assert {r["seed"] for r in records} == {0, 1} and p4["host"]
    # internals: attention starts near uniform; a learned table starts quiet (std 0.02)
    assert 0.8 < p4["attn_entropy_first_init"] <= 1.0 and 0 < p4["attn_entropy_last"] <= 1.0
    assert 0 < p4["position_signal_init"] < 0.1 and p4["position_signal"] > 0
    md = (tmp_path / "results.md").read_text()
    assert "| patch_size=4 | 9,674 | 5 |" in md and "±" in md and "| 2 |" in md  # n = 2
    assert "Budget: equal training FLOPs" in md and "`patch_size=2`" in md
    assert "<details><summary>Every run</summary>" in md and "| patch_size=4,seed=1 |" in md
    assert md.rstrip().endswith("## What it does not show\n\nTiny data.")
    assert "## Answer\n\nSmaller patches win here." in md and "Ran 4 runs in" in md
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["group"], r["seed"]) for r in rows] == [
        ("patch_size=4", "0"), ("patch_size=2", "0"), ("patch_size=4", "1"),
        ("patch_size=2", "1")]
    assert json.loads((tmp_path / "results.json").read_text())["points"][3]["seed"] == 1
    assert (tmp_path / "accuracy_vs_patch_size.png").read_bytes().startswith(PNG_MAGIC)


def test_resolution_sweep_with_seeds_trains_a_checkpoint_per_seed(tmp_path):
    small = tiny_config(**{"total_steps": 3, "eval_every_steps": 3, "checkpoint_every_steps": 3,
                           "log_every_steps": 3, "model.depth": 1, "optim.warmup_steps": 1})
    pp = "decode|resize({res})|value_range(-1,1)|onehot(10)"
    sweep = resolution_sweep_config("res_seeds", small, resolutions=[8, 12],
                                    methods=["bilinear"], finetune_steps=0, pp_train=pp,
                                    pp_eval=pp, seeds=[0, 1], measure={"throughput_steps": 0},
                                    conclusion="Native resolution is best.")
    records = run_sweep(sweep, tmp_path)
    assert [r["name"] for r in records] == [
        "base,seed=0", "res=8,method=bilinear,seed=0", "res=12,method=bilinear,seed=0",
        "base,seed=1", "res=8,method=bilinear,seed=1", "res=12,method=bilinear,seed=1"]
    assert all(r["status"] == "done" for r in records), [r.get("error") for r in records]
    base0, native0, base1 = records[0], records[1], records[3]
    assert base0["final_accuracy"] != base1["final_accuracy"]  # two different checkpoints
    assert native0["noft_accuracy"] == pytest.approx(base0["final_accuracy"], abs=1e-6)
    md = (tmp_path / "results.md").read_text()
    mean = (records[1]["noft_accuracy"] + records[4]["noft_accuracy"]) / 2
    assert f"| 8 | 5 | {100 * mean:.2f} ± " in md  # the trained resolution, over both seeds
    assert "Base runs (one checkpoint per seed, seeds [0, 1]" in md
    assert "## Answer\n\nNative resolution is best." in md
    assert "In progress" not in md and "Checkpoint: `points/base,seed=N`" in md
    with pytest.raises(ValueError, match="drop init_from, or seeds"):
        run_sweep(resolution_sweep_config("x", small, init_from=str(tmp_path), seeds=[0]),
                  tmp_path / "other")


# Each committed study and the sweep config (and argument) that wrote it.
COMMITTED_STUDIES = {
    "flexivit": ("flexivit.py", None),
    "patch_size_mnist_flops": ("patch_size.py", "mnist:DIR"),
    "patch_size_mnist_steps": ("patch_size.py", "mnist-steps:DIR"),
    "posemb_mnist": ("posemb.py", "mnist:DIR"),
    "resolution_mnist": ("resolution.py", "mnist:DIR"),
    "vit_vs_cnn_mnist": ("vit_vs_cnn.py", "mnist:DIR"),
    "vit_vs_cnn_shapes": ("vit_vs_cnn.py", "shapes"),
}


@pytest.mark.parametrize("study", sorted(COMMITTED_STUDIES))
def test_a_committed_studys_answer_is_its_sweep_configs(study):
    """Rerunning a study rewrites results.md from its config: the answer must live there."""
    config, arg = COMMITTED_STUDIES[study]
    sweep = load_config_file(REPO / "configs" / "sweeps" / config, arg)
    assert sweep.conclusion and sweep.limits
    md = (REPO / "docs" / "results" / study / "results.md").read_text()
    answer = "\n".join(closing([], sweep)).strip()
    assert md.rstrip().endswith(answer), f"docs/results/{study}/results.md ends otherwise"
