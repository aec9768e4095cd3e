"""The sweep runner: records, resumes, survives failing points, writes tables and plots."""

import contextlib
import copy
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from tests.helpers import tiny_config
from tests.test_data_mnist import make_mnist_folder
from vit_jax import count_params
from vit_jax.config import build_model, load_config_file, validate
from vit_jax.data.prepare import ENV_DATA_DIR
from vit_jax.sweep import expand_points, resolution_sweep_config, sweep_config
from vit_jax.sweep.points import Preempted, _defaults, config_fingerprint, same_config
from vit_jax.sweep.runner import COMPILE_CACHE, run_sweep, use_compile_cache

SWEEPS = Path(__file__).parent.parent / "configs" / "sweeps"
# (file, arg): every sweep config with every argument its docstring advertises.
SHIPPED = [("patch_size", None), ("patch_size", "16"), ("patch_size", "32"),
           ("patch_size", "digits"), ("patch_size", "smoke"), ("posemb", None),
           ("posemb", "smoke"), ("vit_vs_cnn", None), ("vit_vs_cnn", "smoke"),
           ("resolution", None), ("resolution", "smoke"), ("patch_size", "mnist:{mnist}"),
           ("pixel_tokens", "{mnist}"), ("posemb", "mnist:{mnist}"),
           ("vit_vs_cnn", "mnist:{mnist}"), ("vit_vs_cnn", "shapes"),
           ("resolution", "mnist:{mnist}"), ("flexivit", None), ("navit", None),
           ("navit", "smoke")]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_sweep(**changes):
    base = tiny_config(**{"total_steps": 4, "eval_every_steps": 4, "checkpoint_every_steps": 2,
                          "log_every_steps": 2, "model.depth": 1, "optim.warmup_steps": 1,
                          **changes})
    points = [{"model.patch_size": 4}, {"model.patch_size": 3}, {"model.patch_size": 2}]
    return sweep_config("tiny", base, points, x_key="model.patch_size", log_x=True,
                        eval_train=True, measure={"throughput_steps": 1})


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 3-point sweep whose first point is preempted once and whose second point fails."""
    path = tmp_path_factory.mktemp("sweep")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        calls = iter(range(1, 1000))  # a preemption signal (SIGTERM) during step 2
        mp.setattr("vit_jax.train.preemption_requested", lambda *_: next(calls) == 2)
        with pytest.raises(Preempted, match="patch_size=4 was preempted; rerun"):
            run_sweep(tiny_sweep(), path)
        first = json.loads((path / "points" / "patch_size=4" / "point.json").read_text())
        assert first["status"] == "preempted" and first["wall_seconds"] > 0
        mp.setattr("vit_jax.train.preemption_requested", lambda *_: False)
        records = run_sweep(tiny_sweep(), path)
    assert records[0]["wall_seconds"] > first["wall_seconds"]  # both attempts counted
    return path, records, out.getvalue()


def test_sweep_resumes_and_records_points_and_failures(swept):
    path, records, out = swept
    assert "Resuming from step 2" in out  # the interrupted point continued from its checkpoint
    assert "point 3 of 3" in out and "ETA" in out
    assert [r["status"] for r in records] == ["done", "failed", "done"]
    bad = records[1]
    assert "not divisible by patch size 3x3" in bad["error"] and "Traceback" in bad["traceback"]
    p4, p2 = records[0], records[2]
    info = validate(tiny_sweep().base)
    for rec, patch in ((p4, 4), (p2, 2)):
        model = nnx.eval_shape(lambda p=patch: build_model(
            tiny_sweep(**{"model.patch_size": p}).base, info.num_classes))
        assert rec["params"] == count_params(model)
        assert rec["tokens"] == (8 // patch) ** 2 + 1
        assert rec["final_step"] == 4 and 0.0 <= rec["final_accuracy"] <= 1.0
        assert rec["best_accuracy"] >= rec["final_accuracy"] and 0 <= rec["train_accuracy"] <= 1
        assert rec["peak_memory_mib"] > 0 and rec["train_img_s"] > 0 and rec["eval_img_s"] > 0
        assert rec["train_img_s_run"] > 0 and rec["wall_seconds"] > 0
    assert p2["gflops"] > 2 * p4["gflops"] > 0  # 17 tokens vs 5, attention quadratic


def test_sweep_writes_tables_and_plots(swept):
    path, _, _ = swept
    with open(path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model.patch_size"] for r in rows] == ["4", "3", "2"]
    for column in ("params", "tokens", "gflops", "peak_memory_mib", "train_img_s",
                   "eval_img_s", "wall_seconds", "final_accuracy", "best_accuracy",
                   "final_loss", "train_accuracy", "error"):
        assert column in rows[0]
    saved = json.loads((path / "results.json").read_text())["points"]
    assert [r["name"] for r in saved] == ["patch_size=4", "patch_size=3", "patch_size=2"]
    md = (path / "results.md").read_text()
    assert "| patch_size=2 |" in md and "## Failed points" in md and "3x3" in md
    for png in ("accuracy_vs_patch_size", "accuracy_vs_tokens", "accuracy_vs_gflops",
                "throughput_vs_tokens"):
        data = (path / f"{png}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"({png}.png)" in md


def test_rerun_reloads_finished_points(swept, capsys):
    path, records, _ = swept
    again = run_sweep(tiny_sweep(), path)
    out = capsys.readouterr().out
    assert out.count("reloaded (finished earlier)") == 2 and "Training" not in out
    assert [r["status"] for r in again] == ["done", "failed", "done"]  # failed ones retried
    assert again[0]["final_accuracy"] == records[0]["final_accuracy"]


def test_resolution_sweep_evaluates_and_finetunes(swept, tmp_path, capsys):
    path, records, _ = swept
    pp = "decode|resize({res})|value_range(-1,1)|onehot(10)"
    sweep = resolution_sweep_config(
        "tiny_res", tiny_sweep().base, init_from=str(path / "points" / "patch_size=4"),
        resolutions=[8, 16], methods=["bilinear"], finetune_steps=1, pp_train=pp, pp_eval=pp)
    sweep.finetune = {"batch_size": 16, "optim": {"warmup_steps": 1}}
    out = run_sweep(sweep, tmp_path)
    assert [r["name"] for r in out] == ["res=8,method=bilinear", "res=16,method=bilinear"]
    assert all(r["status"] == "done" for r in out), [r.get("error") for r in out]
    native, up = out
    # At the training resolution nothing is resampled: the checkpoint's own accuracy.
    np.testing.assert_allclose(native["noft_accuracy"], records[0]["final_accuracy"], atol=1e-6)
    assert up["tokens"] == 17 and 0 <= up["ft_accuracy"] <= 1
    assert "posemb: (1,5,32) -> (1,17,32) via bilinear" in capsys.readouterr().out
    md = (tmp_path / "results.md").read_text()
    assert "| 16 | 17 |" in md and "bilinear no FT" in md
    assert (tmp_path / "accuracy_vs_resolution.png").read_bytes().startswith(PNG_MAGIC)


def test_a_point_compiles_its_train_step_once(tmp_path, caplog):
    """The measurements compile the trainer's own step (same mesh, shardings, donation), so the
    trainer loads it from the compilation cache instead of compiling it a second time."""
    base = tiny_config(**{"total_steps": 1, "eval_every_steps": 1, "checkpoint_every_steps": 1,
                          "optim.warmup_steps": 0, "model.depth": 1,
                          "model.mlp_dim": 88})  # a step no other test compiles
    sweep = sweep_config("once", base, [{"model.patch_size": 4}], x_key="model.patch_size",
                         measure={"throughput_steps": 1})
    with caplog.at_level(logging.DEBUG, logger="jax._src.compiler"):
        [record] = run_sweep(sweep, tmp_path)
    assert record["status"] == "done" and record["peak_memory_mib"] > 0
    hits = [r.getMessage() for r in caplog.records if "compilation cache hit" in r.getMessage()]
    assert any("'jit_step_fn'" in hit for hit in hits), hits


def test_a_sweep_keeps_its_compiled_programs_in_its_workdir_unless_a_cache_is_chosen(tmp_path):
    import jax

    chosen = jax.config.jax_compilation_cache_dir  # the suite's (tests/conftest.py)
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        use_compile_cache(tmp_path / COMPILE_CACHE)
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / COMPILE_CACHE)
        use_compile_cache(tmp_path / "another")  # one is chosen now: it stays
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / COMPILE_CACHE)
    finally:
        jax.config.update("jax_compilation_cache_dir", chosen)


def test_bad_points_are_named():
    sweep = sweep_config("x", tiny_config(), [{"model.not_an_option": 1}, {}, {}])
    with pytest.raises(ValueError, match="both named 'base'"):
        expand_points(sweep)
    point = expand_points(sweep_config("x", tiny_config(), [{"model.not_an_option": 1}]))[0]
    assert point.config is None and "not_an_option" in point.config_error
    with pytest.raises(ValueError, match="unknown sweep options"):
        sweep_config("x", tiny_config(), [], x_axis="name")


def test_every_sweep_config_file_is_listed():
    assert {p.stem for p in SWEEPS.glob("*.py")} == {name for name, _ in SHIPPED}


@pytest.mark.parametrize("name,arg", SHIPPED)
def test_sweep_config_points_validate(name, arg, tmp_path, monkeypatch):
    """Every point of every shipped sweep builds and validates (model, optimizer, data
    pipeline). Only the shapes dataset is shrunk, so nothing big is rendered here; the MNIST
    studies get a small generated IDX folder."""
    path = SWEEPS / f"{name}.py"
    assert "python -m vit_jax.sweep --config=configs/sweeps/" in path.read_text()
    if arg and "{mnist}" in arg:
        monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "cache"))
        (tmp_path / "mnist").mkdir()
        make_mnist_folder(str(tmp_path / "mnist"))
        arg = arg.format(mnist=tmp_path / "mnist")
    sweep = load_config_file(path, arg)
    sweep.lock()
    if sweep.kind == "resolution":
        from vit_jax.models.resample import METHODS
        from vit_jax.sweep.resolution import finetune_config

        assert set(sweep.methods) <= set(METHODS)
        # One method per resolution: the method does not change what is validated; validate
        # only checks that init_from exists (the checkpoint is read when the point runs).
        configs = [sweep.base] + [finetune_config(sweep, r, sweep.methods[0], str(tmp_path))
                                  for r in sweep.resolutions]
    elif sweep.kind == "flexi":
        from vit_jax.sweep.flexi import eval_config

        assert Path(sweep.compare).is_file()
        configs = [sweep.base] + [eval_config(sweep.base, p) for p in sweep.patch_sizes]
    elif sweep.kind == "native":
        from vit_jax.sweep.native import eval_point

        assert Path(sweep.compare).is_file()
        configs = [sweep.base] + [eval_point(i, sweep, b).config
                                  for i, b in enumerate(sweep.token_budgets)]
        assert [c.evals.native.max_tokens for c in configs[1:]] == list(sweep.token_budgets)
    else:
        points = expand_points(sweep)
        assert all(p.config_error is None for p in points), [p.config_error for p in points]
        configs = [p.config for p in points]
    for config in configs:
        config.data.shapes.update(num_train=64, num_test=32)
        if config.data.train_subset:
            config.data.train_subset = 48
        validate(config)


def test_a_record_from_before_an_option_existed_matches_while_the_option_is_at_its_default():
    """Upgrading vit_jax mid-study adds options (data.aug_repeats, a model flag): points that
    finished before must reload, unless the new option is set to something else now."""
    now = config_fingerprint(tiny_config())
    defaults = _defaults(now)
    saved = copy.deepcopy(now)
    del saved["data"]["aug_repeats"], saved["model"]["qk_norm"]
    assert same_config(saved, now, defaults) and same_config(now, now, defaults)
    changed = copy.deepcopy(now)
    changed["data"]["aug_repeats"] = 3
    assert not same_config(saved, changed, defaults)
    assert not same_config(now, {**now, "seed": now["seed"] + 1}, defaults)
    assert not same_config({**now, "removed_option": 1}, now, defaults)
