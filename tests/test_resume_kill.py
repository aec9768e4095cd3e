"""Exact resume through a real `kill -9`: the resumed run ends bitwise where an uninterrupted
one does, and a kill in the middle of a save never leaves a checkpoint that restore would use."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import tiny_config
from tests.test_train import assert_same_checkpoint
from vit_jax.checkpoints import Checkpointer

ROOT = Path(__file__).parent.parent
FLAGS = ["--config.total_steps=40", "--config.checkpoint_every_steps=2",
         "--config.checkpoint.async_save=True", "--config.model.dropout=0.1",
         "--config.model.drop_path=0.1", "--config.eval_every_steps=20"]


def command(workdir):
    return [sys.executable, "-m", "vit_jax.main", "--config=tests/helpers.py",
            f"--workdir={workdir}", *FLAGS]


def env():
    return {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "PYTHONPATH": str(ROOT)}


def test_kill9_then_resume_is_bitwise_identical(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen(command(killed), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in (killed / "checkpoints").glob("*") if p.name.isdigit()]
        if steps and max(steps) >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL, proc.stderr.read().decode()[-3000:]
    interrupted_at = Checkpointer(killed).latest_step()
    assert 10 <= interrupted_at < 40

    outputs = {}
    for workdir in (killed, whole):
        done = subprocess.run(command(workdir), cwd=ROOT, env=env(), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[workdir] = done.stdout
    assert f"Resumed from step {interrupted_at}" in outputs[killed]
    assert "Resumed" not in outputs[whole]
    config = tiny_config(**{"model.dropout": 0.1, "model.drop_path": 0.1, "total_steps": 40})
    assert_same_checkpoint(killed, whole, 40, config)
