"""benchmarks/input_pipeline.py at toy size: the JPEGs it makes and the pipelines it times."""

import json
import os

from PIL import Image

from benchmarks import input_pipeline as ip


def test_synthetic_jpegs_look_like_photos_and_every_pipeline_runs(tmp_path):
    cores = len(os.sched_getaffinity(0))
    info = ip.synthesize(tmp_path, 24)
    paths = ip.files(tmp_path)
    assert len(paths) == 24 and info["images"] == 24
    with Image.open(paths[0]) as im:
        assert im.format == "JPEG" and im.size == ip.SIZE and im.mode == "RGB"
    # Textured like a photo: between flat colour (a few KB) and noise (~200 KB at q90).
    assert 30 < info["mean_kb"] < 150
    single = ip.ours_per_core(str(tmp_path), rounds=1)
    assert single["img_s"] > 0 and len(single["all"]) == 1
    augmented = ip.ours_per_core(str(tmp_path), rounds=1, spec=ip.PP_RANDAUG)
    assert augmented["img_s"] > 0
    loader = ip.loader_rate(str(tmp_path), workers=0, batch=8, batches=2)
    assert loader["img_s"] > 0
    result = {"pp": ip.PP, "data": info, "cores": 2, "cpu": "x",
              "vit_jax": {"img_s_per_core": single["img_s"]},
              "vit_jax_randaug": {"img_s_per_core": augmented["img_s"]},
              "loader": {**loader, "img_s_per_core": loader["img_s"]}}
    md = ip.report(result, gpu_img_s=2874.0)
    assert "| vit_jax pp ops, one core |" in md and "Feeding B/16" in md
    assert "| vit_jax pp ops + `randaug(2, 10)`" in md
    json.dumps(result)  # what the benchmark writes beside the table
    assert single["core"] is None and len(os.sched_getaffinity(0)) == cores  # not pinned here
