"""Paths as users type them: ``~``, relative to another working directory, through symlinks.
(Relative workdirs through a kill and a resume: test_resume_kill.py; every README command with
relative paths: tests/readme.py.)"""

import os
import subprocess
import sys
from pathlib import Path

from vit_jax.paths import absolute

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["--config.optim.warmup_steps=1", "--config.eval_every_steps=2",
         "--config.checkpoint_every_steps=2", "--config.log_every_steps=2"]


def test_absolute_expands_home_and_resolves_links(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert absolute("~/runs/a") == tmp_path / "home" / "runs" / "a"
    assert absolute("link/new") == tmp_path / "real" / "new"  # need not exist yet
    assert absolute(Path("x/../y")) == tmp_path / "y"


def test_home_workdir_relative_data_dir_and_symlinked_resume(tmp_path):
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    env = {**os.environ, "HOME": str(home), "JAX_NUM_CPU_DEVICES": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("VIT_JAX_DATA_DIR", None)  # data_dir comes from the config here

    def train(workdir: str, steps: int) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "vit_jax.main", f"--config={ROOT}/tests/helpers.py",
             f"--workdir={workdir}", f"--config.total_steps={steps}",
             "--config.data.data_dir=data", *STEPS],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    out = train("~/runs/a", 4)
    real = home / "runs" / "a"
    assert f"Starting a new run in {real}" in out
    assert (real / "checkpoints" / "4").is_dir() and not (cwd / "~").exists()
    assert f"Preparing the embedded dataset 'digits' in {cwd / 'data'}" in out
    assert "Downloading" not in out and "\x1b" not in out and "\r" not in out  # no TFDS bars
    assert list((cwd / "data" / "digits").glob("*/*.array_record*"))

    (cwd / "linked").symlink_to(real)
    out = train("linked", 6)
    assert f"Resuming from step 4 ({real}/checkpoints)" in out
    assert (real / "checkpoints" / "6").is_dir()
