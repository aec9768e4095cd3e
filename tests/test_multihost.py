"""Multi-process training: 2 processes x 4 CPU devices compute what 1 process x 8 devices does.

The jobs run as separate ``python -m vit_jax.main`` processes joined by JAX's distributed
runtime (gloo collectives over localhost), as on two hosts. Tolerances: a 2-process run is
bitwise equal to a 1-process run that also uses the distributed runtime (``launch_local 1``):
same program, same collectives. A plain 1-process run sums over devices with in-process
collectives in another order, so it differs by rounding: after 5 (or 10) steps parameters
and moments agree to <= 1.2e-7 (measured), checked with ATOL = 1e-6, with one exception
explained in ``assert_close_checkpoints``.

One test runs the whole scenario, because starting and compiling jobs is nearly all its cost.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.helpers import tiny_config
from tests.test_train import assert_same_checkpoint, read_jsonl, restore_params
from vit_jax import distributed, launch_local
from vit_jax.train import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
CONFIG = "tests/helpers.py"
# The schedule's length is fixed, so runs of different lengths take the same steps.
RUN = {"total_steps": 10, "checkpoint_every_steps": 5, "eval_every_steps": 10,
       "log_every_steps": 5, "optim.total_steps": 30}
ATOL = 1e-6  # plain 1 process vs 2 processes (measured <= 1.2e-7)


def mesh(data: int, fsdp: int, tensor: int) -> dict:
    return {"mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor}


def config_flags(changes: dict) -> list[str]:
    return [f"--config.{key}={value}" for key, value in changes.items()]


def subprocess_env() -> dict[str, str]:
    # XLA's backend optimisation level 0 halves compile time, most of these jobs' run time;
    # the code generated is different, the sharding and collectives are the same.
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags.strip(),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def spawned():
    """Processes a test starts; whatever still runs at the end is stopped (launchers with
    SIGTERM, which makes them kill their processes; training processes with SIGKILL)."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None and p.args[2] == "vit_jax.launch_local":
            p.terminate()
        elif p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def start_job(spawned: list, n: int, workdir: Path, changes: dict, devices: int) -> Path:
    """``python -m vit_jax.launch_local N ...``; returns its log file, ``workdir``.log."""
    log = workdir.with_suffix(".log")
    cmd = [sys.executable, "-m", "vit_jax.launch_local", str(n), CONFIG, str(workdir),
           f"--devices_per_process={devices}", *config_flags(changes)]
    with open(log, "w") as out:
        spawned.append(subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=out,
                                        stderr=subprocess.STDOUT))
    return log


def finish(proc: subprocess.Popen, log: Path) -> str:
    proc.wait(timeout=300)
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    return out


def assert_close_checkpoints(a: Path, b: Path, step: int) -> None:
    """Parameters and optimizer moments within ATOL, except the attention key biases: their
    true gradient is exactly 0 (softmax ignores a shift shared by all keys), so their value is
    rounding noise scaled up by Adam to ~lr; for them both runs must only keep them tiny."""
    (pa, ra), (pb, rb) = (restore_params(w, step, tiny_config()) for w in (a, b))
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(pa), jax.tree.leaves(pb),
                            strict=True):
        name = jax.tree_util.keystr(path)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if "['key']['bias']" in name and "['mu']" not in name and "['nu']" not in name:
            assert np.abs(x).max() < 1e-3 and np.abs(y).max() < 1e-3, name
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=ATOL, err_msg=name)
    assert ra.data_state == rb.data_state


def start_processes(spawned: list, n: int, workdir: Path, changes: dict, *extra: str) -> list:
    """``python -m vit_jax.main`` n times by hand (no launcher, which would kill the survivors
    of a failure at once): output in ``workdir``.<i>.log."""
    port, procs = launch_local.free_port(), []
    for i in range(n):
        with open(workdir.with_suffix(f".{i}.log"), "w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "vit_jax.main", f"--config={CONFIG}",
                 f"--workdir={workdir}", *extra, *config_flags(changes)],
                cwd=REPO, env=launch_local.process_env(i, n, port, 8 // n, subprocess_env()),
                stdout=out, stderr=subprocess.STDOUT))
    spawned.extend(procs)
    return procs


def wait_for_checkpoint(workdir: Path, step: int, procs: list, timeout: float = 240) -> None:
    """Polls the directory (not a Checkpointer: opening one deletes in-flight saves)."""
    deadline = time.monotonic() + timeout
    while not (workdir / "checkpoints" / str(step)).is_dir():
        assert all(p.poll() is None for p in procs), workdir.with_suffix(".0.log").read_text()
        assert time.monotonic() < deadline, f"no checkpoint at step {step} in {timeout} s"
        time.sleep(0.5)


def test_two_processes_train_like_one_checkpoints_move_and_a_dead_process_ends_the_job(
        tmp_path, capsys, spawned):
    # --- 2 processes x 4 devices vs 1 process x 8 devices, both on the distributed runtime,
    # mesh fsdp=4 x tensor=2 (parameters sharded across the two processes): bitwise equal.
    changes = {**RUN, **mesh(1, 4, 2)}
    two_log = start_job(spawned, 2, tmp_path / "two", changes, devices=4)
    one_log = start_job(spawned, 1, tmp_path / "one", changes, devices=8)
    out = finish(spawned[0], two_log)
    finish(spawned[1], one_log)
    assert "over 8 cpu devices, 2 process(es)" in out
    assert "[Gloo]" not in out and "peer ranks" not in out  # the launcher drops handshakes
    assert_same_checkpoint(tmp_path / "two", tmp_path / "one", 10, tiny_config())

    # Logs, metrics and results come from process 0 only, once; checkpoints are complete.
    lines = out.splitlines()
    assert sum("step 10/10" in line for line in lines) == 1
    assert not [line for line in lines if line.startswith("[1] ") and "step" in line]
    workdir = tmp_path / "two"
    assert [row["step"] for row in read_jsonl(workdir / "metrics.jsonl")] == [5, 10]
    results = json.loads((workdir / "results.json").read_text())
    assert results["final"]["step"] == 10 and results["final"]["eval/accuracy"] > 0.2
    assert len(list(workdir.glob("events.out.tfevents*"))) == 1
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["10", "5"]

    # --- 1 process -> 2 processes on another mesh (data=2, fsdp=2, tensor=2): resume the
    # 1-process checkpoint and train on until the step-15 checkpoint exists; then kill process 1.
    shutil.copytree(tmp_path / "one", tmp_path / "one_on_two")
    endless = {**RUN, **mesh(2, 2, 2), "total_steps": 1000, "checkpoint.keep": 1000}
    procs = start_processes(spawned, 2, tmp_path / "one_on_two", endless,
                            "--heartbeat_timeout=10")
    wait_for_checkpoint(tmp_path / "one_on_two", 15, procs)
    procs[1].send_signal(signal.SIGKILL)
    killed, survivor = time.monotonic(), {}
    waiter = threading.Thread(target=lambda: survivor.update(
        code=procs[0].wait(), seconds=time.monotonic() - killed))
    waiter.start()

    # --- Meanwhile, in this process: 2 processes -> 1 process on another mesh (fsdp=8).
    shutil.copytree(tmp_path / "two", tmp_path / "two_on_one")
    capsys.readouterr()
    train_and_evaluate(tiny_config(**{**RUN, **mesh(1, 8, 1), "total_steps": 15}),
                       tmp_path / "two_on_one")
    assert "Resuming from step 10" in capsys.readouterr().out

    out = tmp_path.joinpath("one_on_two.0.log").read_text()
    assert "Resuming from step 10" in out and "over 8 cpu devices, 2 process(es)" in out
    # Both continuations start from the same (bitwise) step-10 state, restored onto another
    # mesh and process count; 5 steps later they agree to rounding.
    assert_close_checkpoints(tmp_path / "one_on_two", tmp_path / "two_on_one", 15)

    # The survivor does not hang in its next collective: its gloo connection to process 1
    # breaks, or else the coordinator misses process 1's heartbeats for 10 s and aborts it.
    waiter.join(timeout=60)
    out = tmp_path.joinpath("one_on_two.0.log").read_text()  # now with the survivor's last words
    assert survivor and survivor["code"] != 0 and survivor["seconds"] < 60, out[-3000:]
    assert re.search(r"Gloo \S+ failed|stopped sending heartbeats", out), out[-3000:]


# ----------------------------------------------------------------------------- when to join


def test_join_plan_from_flags_environment_and_launchers(caplog):
    plan = distributed.plan
    assert not plan(environ={}).join  # a laptop run: one process, no runtime
    explicit = {"VIT_JAX_COORDINATOR": "10.0.0.1:1234", "VIT_JAX_NUM_PROCESSES": "4",
                "VIT_JAX_PROCESS_ID": "2"}
    p = plan(environ=explicit)
    assert (p.join, p.coordinator_address, p.num_processes, p.process_id) == (
        True, "10.0.0.1:1234", 4, 2)
    assert plan(process_id=3, environ=explicit).process_id == 3  # a flag beats the environment
    assert plan(num_processes=1, process_id=0, coordinator_address="h:1", environ={}).join
    srun = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[01-04]", "SLURM_NTASKS": "32",
            "SLURM_PROCID": "5", "SLURM_LOCALID": "5"}
    p = plan(environ=srun)  # JAX reads the rest from SLURM's variables
    assert p.join and p.num_processes is None and "SLURM" in p.reason
    assert not plan(environ={**srun, "SLURM_NTASKS": "1"}).join
    assert not plan("off", environ=srun).join
    assert plan("on", environ={}).join  # Cloud TPU pods: JAX asks the metadata server
    assert plan(environ={"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}).join
    batch_script = {k: v for k, v in srun.items() if k != "SLURM_STEP_NODELIST"}
    assert not plan(environ=batch_script).join
    assert "not inside an srun step" in caplog.text


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="maybe"), "valid values: auto, on, off"),
    (dict(num_processes=0), "num_processes must be an integer >= 1"),
    (dict(environ={"VIT_JAX_PROCESS_ID": "one"}), "process_id must be an integer >= 0"),
    (dict(num_processes=2, process_id=2), "process_id=2 must be smaller than num_processes=2"),
    (dict(mode="off", coordinator_address="h:1"), "--distributed=off contradicts"),
])
def test_bad_join_settings_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.plan(**{"environ": {}, **kwargs})


def test_launcher_gives_each_process_its_coordinates():
    env = launch_local.process_env(1, 2, 5555, 4, base={"PATH": "/bin"})
    assert env["VIT_JAX_COORDINATOR"] == "127.0.0.1:5555" and env["VIT_JAX_PROCESS_ID"] == "1"
    assert env["VIT_JAX_NUM_PROCESSES"] == "2" and env["JAX_NUM_CPU_DEVICES"] == "4"
    assert env["JAX_PLATFORMS"] == "cpu" and env["PATH"] == "/bin"
