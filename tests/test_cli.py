"""Bad command lines, as a new user types them: one line on stderr, exit code 2, nothing done.

Every command runs in a scratch directory (not the repository) with relative paths, through a
``configs`` symlink, as a user's shell would run it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = "--config=configs/quickstart.py"

MAIN_CASES = {
    "typo'd key": ([QUICK, "--config.optim.lrr=1e-3"],
                   r"--config\.optim\.lrr: no key 'lrr' in config\.optim \(did you mean "
                   r"config\.optim\.lr\?\); valid keys: b1, b2, .*"),
    "dead key removed": ([QUICK, "--config.label_smoothing=0.1"],
                         r"no key 'label_smoothing' in config; valid keys: .*batch_size"),
    "key under a value": ([QUICK, "--config.seed.x=1"],
                          r"--config\.seed\.x: config\.seed is a value \(0\), not a section"),
    "patch from the variant": ([QUICK, "--config.model.patch_size=5"],
                               r"config\.model: image size 16x16 is not divisible by patch "
                               r"size 5x5"),
    "negative lr": ([QUICK, "--config.optim.lr=-1"],
                    r"optim\.lr=-1\.0 must be a number in \[0, inf\)"),
    "rate out of range": ([QUICK, "--config.model.dropout=1.5"],
                          r"dropout=1\.5 must be a rate in \[0, 1\)"),
    "layerscale (None default)": ([QUICK, "--config.model.layerscale=-2"],
                                  r"layerscale=-2\.0 must be None \(off\) or a number > 0"),
    "wrong type": ([QUICK, "--config.total_steps=abc"],
                   r"--config\.total_steps=abc: invalid literal for int\(\)"),
    "missing value": ([QUICK, "--config.optim.lr"], r"Missing value for flag --config\.optim\.lr"),
    "missing config file": (["--config=configs/nope.py"],
                            r"--config=configs/nope\.py: no such config file \(relative paths "
                            r"start in .*\); configs/ here has .*quickstart\.py"),
    "bad config argument": (["--config=configs/small_data.py:foo"],
                            r"--config=configs/small_data\.py:foo: ValueError: .*foo"),
    "missing workdir": ([QUICK], None),
    "unknown variant": ([QUICK, "--config.model.variant=Q/16"], r"unknown ViT size 'Q'"),
    "heads not dividing width": ([QUICK, "--config.model.num_heads=3"],
                                 r"width 128 is not divisible by num_heads 3"),
    "batch not dividing devices": ([QUICK, "--config.batch_size=100", "--config.mesh.data=8"],
                                   r"batch_size=100 is not divisible by the 8 data\*fsdp "
                                   r"devices of the mesh; use a multiple of 8"),
    "missing init_from": ([QUICK, "--config.init_from=runs/nothing"],
                          r"config\.init_from=runs/nothing: nothing there"),
    "warmup longer than the run": ([QUICK, "--config.total_steps=20"],
                                   r"optim\.warmup_steps \+ optim\.cooldown_steps \(50\+0\) "
                                   r"exceed the 20 training steps"),
    "positional argument": ([QUICK, "extra"], r"unexpected arguments \['extra'\]"),
    "unknown compute dtype": ([QUICK, "--config.model.dtype=float16"],
                              r"config\.model: unknown dtype 'float16'; valid: \('float32', "
                              r"'bfloat16', 'auto'\)"),
    "unknown Adam moment dtype": ([QUICK, "--config.optim.mu_dtype=bf16"],
                                  r"optim\.mu_dtype='bf16' must be one of \(None, 'float32', "
                                  r"'bfloat16'\)"),
    "argument to a config without one": (["--config=configs/quickstart.py:badarg"],
                                         r"quickstart\.py takes no argument, got 'badarg'; "
                                         r"drop the ':badarg'"),
    "missing data.root": ([QUICK, "--config.data.name=folder", "--config.data.root=imgs"],
                          r"data\.root=\S+/imgs: no such directory \(it should hold "
                          r"<split>/<class>/<image files>\)"),
}


def run(tmp_path: Path, module: str, args: list[str], devices: int = 1):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(done, pattern: str | None) -> str:
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    if pattern:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize("name", list(MAIN_CASES))
def test_bad_training_command_is_one_line_and_exit_2(tmp_path, name):
    args, pattern = MAIN_CASES[name]
    needs_workdir = name != "missing workdir"
    args = ["--workdir=runs/x", *args] if needs_workdir else args
    done = run(tmp_path, "vit_jax.main", args, devices=8 if "devices" in name else 1)
    line = assert_one_line_error(done, pattern)
    if not needs_workdir:
        assert "--workdir" in line
    assert not (tmp_path / "runs").exists()  # no work was done


def test_bad_sweep_and_plan_commands_are_one_line_and_exit_2(tmp_path):
    done = run(tmp_path, "vit_jax.sweep", [
        "--config=configs/sweeps/patch_size.py", "--workdir=runs/s",
        "--config.base.optim.lrr=1"])
    assert_one_line_error(done, r"--config\.base\.optim\.lrr: no key 'lrr' in "
                                r"config\.base\.optim \(did you mean config\.base\.optim\.lr\?\)")
    (tmp_path / "configs").unlink()
    done = run(tmp_path, "vit_jax.plan", ["--variant=Q/16", "--mesh=fsdp=2"])
    assert_one_line_error(done, r"unknown ViT size 'Q'")
    (tmp_path / "configs").unlink()
    done = run(tmp_path, "vit_jax.plan", ["--variant=Ti/16", "--backend=xpu"])
    assert_one_line_error(done, r"--backend.*xpu")
    (tmp_path / "configs").unlink()
    done = run(tmp_path, "vit_jax.plan", ["--variant=Ti/16", "--mesh=data=1", "--backend=gpu"])
    assert_one_line_error(done, r"--backend=gpu: JAX finds no gpu here; plan with --backend=cpu, "
                                r"or on a machine with the accelerator")


def test_workdir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "notes").write_text("not a directory")
    done = run(tmp_path, "vit_jax.main", ["--workdir=notes/run", QUICK])
    assert_one_line_error(done, r"--workdir \S+/notes/run \(or a folder above it\) is a file; "
                                r"give a directory")
    assert (tmp_path / "notes").read_text() == "not a directory"
