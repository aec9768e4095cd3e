"""`python -m vit_jax.maps`: saliency, attention and position figures and numbers of trained
runs (a ViT and a CNN trained here for a few steps), and its one-line errors."""

import json

import numpy as np
import pytest

from tests.helpers import tiny_config
from vit_jax import maps
from vit_jax.config import model_config
from vit_jax.train import train_and_evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    vit = root / "vit"
    cnn = root / "cnn"
    train_and_evaluate(tiny_config(total_steps=15), vit)
    cnn_config = tiny_config(total_steps=15)
    cnn_config.model = model_config("SimpleCNN", in_channels=1)
    train_and_evaluate(cnn_config, cnn)
    return vit, cnn


def test_maps_of_a_vit_and_a_cnn(trained, tmp_path, capsys):
    vit, cnn = trained
    out = tmp_path / "out"
    assert maps.main([f"--workdir={vit}", f"--workdir={cnn}", f"--out={out}", "--shown=3"]) == 0
    records = json.loads((out / "maps.json").read_text())
    assert [r["name"] for r in records] == ["vit", "cnn"]
    v, c = records
    assert v["model"] == "mu/4" and v["posemb"] == "learn"
    assert -1.0 <= v["position_locality"] <= 1.0 and -1.0 <= v["position_locality_init"] <= 1.0
    assert 0.0 < v["attn_entropy_last"] <= 1.0 and 0.0 < v["cls_attention_entropy"] <= 1.0
    assert c["model"] == "SimpleCNN" and "posemb" not in c and "attn_entropy_last" not in c
    assert sorted(p.name for p in out.glob("*.png")) == ["cnn.png", "vit.png",
                                                         "vit_positions.png"]
    report = (out / "maps.md").read_text()
    assert "| vit | mu/4 | learn |" in report and "| cnn | SimpleCNN |" in report
    assert "[maps] wrote" in capsys.readouterr().out


def test_the_numbers_are_those_of_the_analysis_functions(trained):
    from vit_jax import analysis, data, loading

    vit, _ = trained
    config = loading.load_config(vit)
    batch = data.first_eval_batch(config.data, 8)
    numbers, got = maps.measure(maps.Run("vit", vit), config, batch["image"], batch["label"])
    model = loading.load_model(vit, verbose=False)
    sim = analysis.position_similarity(analysis.patch_position_table(model))
    assert numbers["position_locality"] == pytest.approx(analysis.position_locality(sim))
    np.testing.assert_allclose(got["saliency"].sum(axis=(1, 2)), 1.0, rtol=1e-6)
    assert got["cls_attention"].shape == (8, 2, 2, 2)  # 8x8 image, patch 4, 2 heads


def test_a_sweep_workdir_gives_its_finished_points(tmp_path, trained):
    vit, _ = trained
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep_config.json").write_text("{}")
    with pytest.raises(ValueError, match="no finished point"):
        maps.runs_in(sweep)
    points = [{"name": f"a,seed={s}", "group": "a", "seed": s, "status": "done",
               "workdir": str(vit)} for s in (0, 1)]
    points.append({"name": "b", "status": "failed", "workdir": str(vit)})
    (sweep / "results.json").write_text(json.dumps({"points": points}))
    runs = maps.runs_in(sweep)
    assert [(r.name, r.group, r.seed) for r in runs] == [("a,seed=0", "a", 0),
                                                         ("a,seed=1", "a", 1)]


def test_bad_input_is_one_line_each_before_any_work(tmp_path, capsys):
    code = maps.main([f"--workdir={tmp_path / 'nope'}", f"--workdir={tmp_path}",
                      f"--out={tmp_path / 'o'}", "--shown=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 3
    assert "neither a training workdir" in err[0] and "--shown=0: must be 1 to 64" in err[2]
    assert not (tmp_path / "o").exists()
