"""Exact resume through a real `kill -9`: the resumed run ends bitwise where an uninterrupted
one does, and a kill in the middle of a save never leaves a checkpoint that restore would use.
Run as a user would: from another directory, with a relative workdir."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import tiny_config, tiny_packed_config
from tests.test_metrics import _purge_steps
from tests.test_train import assert_same_checkpoint
from vit_jax.checkpoints import Checkpointer

ROOT = Path(__file__).parent.parent
FLAGS = ["--config.total_steps=40", "--config.checkpoint_every_steps=2",
         "--config.checkpoint.async_save=True", "--config.model.dropout=0.1",
         "--config.model.drop_path=0.1", "--config.eval_every_steps=20"]


def command(workdir, arg=""):
    return [sys.executable, "-m", "vit_jax.main", f"--config={ROOT}/tests/helpers.py{arg}",
            f"--workdir={workdir}", *FLAGS]


def env():
    return {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("arg", ["", ":packed"])
def test_kill9_then_resume_is_bitwise_identical(tmp_path, arg):
    """``:packed``: NaViT packing, whose iterator state (stream position, waiting images) and
    token drops must resume exactly too."""
    killed, whole = Path("runs/killed"), Path("runs/whole")  # relative to tmp_path
    proc = subprocess.Popen(command(killed, arg), cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed, whole = tmp_path / killed, tmp_path / whole
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
        done = subprocess.run(command(workdir.relative_to(tmp_path), arg), cwd=tmp_path, env=env(),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[workdir] = done.stdout
    assert f"Resuming from step {interrupted_at} ({killed}/checkpoints)" in outputs[killed]
    assert f"Starting a new run in {whole}" in outputs[whole]
    make = tiny_packed_config if arg else tiny_config
    config = make(**{"model.dropout": 0.1, "model.drop_path": 0.1, "total_steps": 40})
    assert_same_checkpoint(killed, whole, 40, config)
    # Each step logged once, with the values of the uninterrupted run (resume is bitwise).
    logged = {w: (w / "metrics.jsonl").read_text().splitlines() for w in (killed, whole)}
    assert [json.loads(line)["step"] for line in logged[whole]] == [10, 20, 30, 40]
    assert logged[killed] == logged[whole]
    # TensorBoard is told to drop the killed run's events after the resumed step: one curve.
    assert _purge_steps(killed) == [interrupted_at + 1] and _purge_steps(whole) == []
