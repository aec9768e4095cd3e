"""The FlexiViT sweep: one FlexiViT run evaluated at every patch size, beside a patch-size
sweep's separately trained models."""

import json

import pytest

from tests.helpers import tiny_config
from vit_jax.config import load_config_file
from vit_jax.sweep import flexi_sweep_config, run_sweep


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("flexi_sweep")
    separate = root / "separate.json"  # what a patch-size sweep with seeds writes, in short
    separate.write_text(json.dumps({"points": [
        {"name": f"model.patch_size={p},seed={s}", "group": f"model.patch_size={p}", "seed": s,
         "status": "done", "delta": {"model.patch_size": p, "seed": s}, "gflops": 0.01 / p,
         "final_accuracy": acc + 0.01 * s}
        for p, acc in ((8, 0.5), (4, 0.6)) for s in (0, 1)]}))
    base = tiny_config(**{"model.flexi_patch_sizes": (8, 4, 2), "total_steps": 30})
    sweep = flexi_sweep_config("flexi_test", base, compare=str(separate),
                               description="a test")
    return root, sweep, run_sweep(sweep, root / "run")


def test_one_run_then_an_evaluation_per_patch_size(swept):
    root, _, records = swept
    assert [r["name"] for r in records] == ["flexivit", "patch_size=8", "patch_size=4",
                                            "patch_size=2"]
    assert all(r["status"] == "done" for r in records)
    run, p8, p4, p2 = records
    assert p4["final_accuracy"] == pytest.approx(run["final_accuracy"], abs=1e-6)  # patch 4
    assert [r["tokens"] for r in (p8, p4, p2)] == [2, 5, 17]  # 8x8 digits + a class token
    assert p8["gflops"] < p4["gflops"] < p2["gflops"]
    assert all(0.0 <= r["final_accuracy"] <= 1.0 for r in (p8, p2))


def test_the_table_and_plots_put_the_separate_models_beside_it(swept):
    root, _, _ = swept
    md = (root / "run" / "results.md").read_text()
    assert "| patch | tokens/img | GFLOPs/img (fwd) | FlexiViT acc | FlexiViT loss | " \
           "separately trained acc |" in md
    assert "| 8 | 2 |" in md and "50.50 ± 0.71%" in md and "60.50 ± 0.71%" in md
    assert (root / "run" / "accuracy_vs_patch_size.png").stat().st_size > 10_000
    assert (root / "run" / "accuracy_vs_gflops.png").stat().st_size > 10_000


def test_a_rerun_reloads_every_point(swept, capsys):
    root, sweep, records = swept
    again = run_sweep(sweep, root / "run")
    assert [r["final_accuracy"] for r in again] == [r["final_accuracy"] for r in records]
    assert capsys.readouterr().out.count("reloaded (finished earlier)") == 4


def test_the_shipped_flexivit_configs_load():
    train = load_config_file("configs/flexivit.py")
    assert train.model.flexi_patch_sizes == (16, 8, 4, 2, 1) and train.model.patch_size == 4
    assert sorted(train.evals) == ["eval", "eval_p1", "eval_p16", "eval_p2", "eval_p8"]
    sweep = load_config_file("configs/sweeps/flexivit.py")
    assert sweep.kind == "flexi" and sweep.patch_sizes == [16, 8, 4, 2, 1]
    assert sweep.compare.endswith("docs/results/patch_size_digits/results.json")
    with pytest.raises(ValueError, match="takes no argument"):
        load_config_file("configs/sweeps/flexivit.py", "x")
