"""Fault injection with real files and processes, no mocks: damaged checkpoints, a full disk,
Ctrl-C and SIGTERM during saves, two runs on one workdir, a dead run's lock, bad images.

Each case asserts what the user sees (one line, the exit code) and that nothing good was lost:
wherever a good step existed, the resumed run ends bitwise equal to an uninterrupted one.
Every run is the command line, from a scratch directory, with a relative workdir.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import tiny_config
from tests.test_data_sources import make_folder
from tests.test_train import assert_same_checkpoint
from vit_jax import integrity
from vit_jax.checkpoints import CheckpointCorruptError, complete_steps
from vit_jax.loading import load_model
from vit_jax.runlock import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]
TOTAL = 60
FLAGS = [f"--config.total_steps={TOTAL}", "--config.checkpoint_every_steps=5",
         "--config.eval_every_steps=30", "--config.checkpoint.async_save=True"]
CONFIG = tiny_config(total_steps=TOTAL)  # what the runs train (checkpoint cadence aside)


def command(workdir: str | Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "vit_jax.main", f"--config={ROOT}/tests/helpers.py",
            f"--workdir={workdir}", *FLAGS, *flags]


def env() -> dict[str, str]:
    return {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "PYTHONPATH": str(ROOT)}


def main(cwd: Path, workdir: str, *flags: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(workdir, *flags), cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def start(cwd: Path, workdir: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(command(workdir, *flags), cwd=cwd, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_step(proc: subprocess.Popen, checkpoints: Path, step: int) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.isdigit() and int(p.name) >= step for p in checkpoints.glob("*")):
            return
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    raise AssertionError(f"no checkpoint >= {step} appeared (rc {proc.returncode}):\n{err[-3000:]}")


def error_line(done: subprocess.CompletedProcess, rc: int) -> str:
    """The run's stderr is one line "error: ..." and its exit code is ``rc``."""
    lines = done.stderr.splitlines()
    assert done.returncode == rc, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


def assert_clean(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Event loop" not in done.stderr, done.stderr[-3000:]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The uninterrupted reference run ``runs/whole`` and ``runs/cut``: the same run stopped
    by SIGTERM after its checkpoint 20 (it saves the step it is at and exits 0)."""
    cwd = tmp_path_factory.mktemp("faults")
    assert_clean(main(cwd, "runs/whole"))
    proc = start(cwd, "runs/cut")
    wait_for_step(proc, cwd / "runs/cut/checkpoints", 20)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    saved = int(re.search(r"Preempted: saved step (\d+)", out).group(1))
    assert 20 <= saved < TOTAL and complete_steps(cwd / "runs/cut")[-1] == saved
    return cwd


def copy_run(scratch: Path, name: str, source: str = "runs/cut") -> Path:
    shutil.copytree(scratch / source, scratch / "runs" / name)
    return scratch / "runs" / name


def largest_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(step_dir: Path) -> str:
    file = largest_file(step_dir)
    os.truncate(file, file.stat().st_size // 2)
    return rf"{re.escape(str(file.relative_to(step_dir)))} has [\d,]+ bytes, [\d,]+ were written"


def overwrite(step_dir: Path) -> str:
    file = largest_file(step_dir)
    with file.open("r+b") as f:
        f.seek(file.stat().st_size // 2)
        chunk = f.read(16)
        f.seek(-len(chunk), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in chunk))
    return (rf"{re.escape(str(file.relative_to(step_dir)))} does not match its checksum "
            r"\(its bytes were changed\)")


def delete_metadata(step_dir: Path) -> str:
    (step_dir / "model" / "_METADATA").unlink()
    return r"model/_METADATA is missing"


def garbage_json(step_dir: Path) -> str:
    (step_dir / "_CHECKPOINT_METADATA").write_text("{not json")
    return r"_CHECKPOINT_METADATA is missing or not JSON"


DAMAGES = {f.__name__: f for f in (truncate, overwrite, delete_metadata, garbage_json)}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_latest_step_is_named_skipped_and_the_run_ends_bitwise(scratch, damage):
    workdir = copy_run(scratch, f"damaged_{damage}")
    *_, previous, latest = complete_steps(workdir)
    reason = DAMAGES[damage](workdir / "checkpoints" / str(latest))

    with pytest.raises(CheckpointCorruptError, match=rf"{latest} is damaged: {reason}.*Other "
                       rf"steps there: \[.*{previous}\]"):
        load_model(workdir, verbose=False)
    load_model(workdir, step=previous, verbose=False)  # the good steps stay loadable

    done = main(scratch, f"runs/damaged_{damage}")
    assert_clean(done)
    assert re.search(rf"Checkpoint step {latest} in \S+ is unusable \({reason}\); moved to "
                     rf"{latest}\.unusable, resuming from step {previous}\n", done.stdout)
    assert (workdir / "checkpoints" / f"{latest}.unusable").is_dir()  # kept for a post-mortem
    assert_same_checkpoint(workdir, scratch / "runs/whole", TOTAL, CONFIG)


def test_no_usable_step_is_one_error_listing_every_step(scratch):
    workdir = copy_run(scratch, "all_damaged")
    steps = complete_steps(workdir)
    for step in steps:
        overwrite(workdir / "checkpoints" / str(step))
    line = error_line(main(scratch, "runs/all_damaged"), 2)
    listing = "; ".join(rf"step {s}: [^;]* does not match its checksum \(its bytes were "
                        r"changed\)" for s in reversed(steps))
    assert re.search(rf"no usable checkpoint in \S+/checkpoints: {listing}\. Move the workdir "
                     "aside", line), line


def _tmpfs_available() -> bool:
    probe = "mkdir -p /tmp/vit_jax_probe && mount -t tmpfs -o size=1m tmpfs /tmp/vit_jax_probe"
    return subprocess.run(["unshare", "-rm", "sh", "-c", probe],
                          capture_output=True).returncode == 0 if shutil.which("unshare") else False


def test_full_disk_stops_at_the_failing_save_in_one_line(scratch):
    """The cut run resumes on a small filesystem (a size-limited tmpfs in its own mount
    namespace, else a file-size limit): the next save fails, the run stops there in one line,
    the earlier steps are intact, and once there is room the run ends bitwise."""
    workdir = copy_run(scratch, "full_disk")
    before = complete_steps(workdir)
    cmd = " ".join(f"'{a}'" for a in command("runs/full_disk"))
    if _tmpfs_available():  # ENOSPC, as on a full disk
        used_kib = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file()) // 1024
        mnt = scratch / "small_disk"
        mnt.mkdir()
        script = (f"mount -t tmpfs -o size={used_kib + 700}k tmpfs {mnt} && mkdir {mnt}/runs && "
                  f"cp -a {workdir} {mnt}/runs/ && cd {mnt} && {cmd}; rc=$?; "
                  f"rm -rf {workdir} && cp -a {mnt}/runs/full_disk {workdir}; exit $rc")
        shell = ["unshare", "-rm", "sh", "-c", script]
    else:  # EFBIG: no file may grow past 64 KiB, and the optimizer's array file is larger
        shell = ["sh", "-c", f"ulimit -f 64 && {cmd}"]
    done = subprocess.run(shell, cwd=scratch, env=env(), capture_output=True, text=True,
                          timeout=300)
    line = error_line(done, 1)
    assert re.search(r"could not save the checkpoint of step \d+ to \S+/checkpoints: \w+: "
                     r".*(No space left on device|File too large).*; the earlier checkpoints "
                     r"are intact", line), line
    assert complete_steps(workdir) == before
    for step in before:
        assert integrity.check(workdir / "checkpoints" / str(step)) is None
    done = main(scratch, "runs/full_disk")
    assert_clean(done)
    assert_same_checkpoint(workdir, scratch / "runs/whole", TOTAL, CONFIG)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_saves_saves_the_step_and_exits(scratch, sig):
    """A checkpoint every step, so a save is in flight at almost any moment."""
    name = f"signal_{sig.name}"
    proc = start(scratch, f"runs/{name}", "--config.checkpoint_every_steps=1")
    wait_for_step(proc, scratch / "runs" / name / "checkpoints", 10)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    expected_rc, word = (130, "Interrupted") if sig == signal.SIGINT else (0, "Preempted")
    assert proc.returncode == expected_rc, err[-3000:]
    assert err == "", err[-3000:]  # no traceback, no Orbax noise
    saved = int(re.search(rf"{word}: saved step (\d+) to \S+; rerun to resume\.", out).group(1))
    workdir = scratch / "runs" / name
    assert complete_steps(workdir)[-1] == saved
    assert integrity.check(workdir / "checkpoints" / str(saved)) is None
    assert not list((workdir / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    done = main(scratch, f"runs/{name}")
    assert_clean(done)
    assert f"Resuming from step {saved} " in done.stdout
    assert_same_checkpoint(workdir, scratch / "runs/whole", TOTAL, CONFIG)


def test_second_run_on_a_workdir_refuses_and_a_dead_runs_lock_is_taken_over(scratch):
    first = start(scratch, "runs/shared", "--config.total_steps=100000")
    wait_for_step(first, scratch / "runs/shared/checkpoints", 5)
    second = main(scratch, "runs/shared", "--config.total_steps=100000")
    line = error_line(second, 2)
    host = os.uname().nodename
    assert re.search(rf"runs/shared is in use by another run \(host {re.escape(host)}, pid "
                     rf"{first.pid}, started [\d\-T:]+\); wait for it to end, stop it, or use "
                     "another --workdir", line), line

    first.send_signal(signal.SIGKILL)  # dies holding the lock: its file still names it
    first.communicate(timeout=60)
    assert f'"pid": {first.pid}' in (scratch / "runs/shared" / LOCK_FILE).read_text()
    # total_steps below the saved step: the resumed run only evaluates and reports.
    third = main(scratch, "runs/shared", "--config.total_steps=10",
                 "--config.optim.warmup_steps=2")
    assert_clean(third)
    assert re.search(rf"Took over the lock of a run that is no longer running \(host "
                     rf"{re.escape(host)}, pid {first.pid}, started ", third.stdout), third.stdout
    assert (scratch / "runs/shared" / LOCK_FILE).read_text() == ""  # released at the end


FOLDER_PP = "decode|value_range(0,1)|onehot(3)"  # no resize: every image must be 8x8 RGB


def _folder_flags(root: Path, *extra: str) -> list[str]:
    return ["--config.data.name=folder", f"--config.data.root={root}",
            f"--config.data.pp_train={FOLDER_PP}", f"--config.data.pp_eval={FOLDER_PP}",
            "--config.model.in_channels=3", "--config.batch_size=6",
            "--config.eval_batch_size=6", "--config.total_steps=10",
            "--config.optim.warmup_steps=2", "--config.checkpoint_every_steps=10",
            "--config.eval_every_steps=10", *extra]


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_image_that_does_not_fit_is_named_or_skipped(scratch, split):
    root = scratch / f"images_{split}"
    make_folder(root, {"train": 4, "test": 2})
    for image in root.rglob("*.*"):  # make_folder's images vary in size: make them 8x8
        Image.open(image).convert("RGB").resize((8, 8)).save(image)
    odd = root / split / "green" / "odd.png"
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(odd)  # another size, greyscale
    done = main(scratch, f"runs/odd_{split}", *_folder_flags(root))
    line = error_line(done, 2)
    assert re.search(rf"{re.escape(str(odd))}: preprocessed to shape \(12, 9, 1\), but the "
                     r"other images come out \(8, 8, 3\).*data\.skip_corrupt=True", line), line
    done = main(scratch, f"runs/odd_{split}_skipped",
                *_folder_flags(root, "--config.data.skip_corrupt=True"))
    assert_clean(done)
    assert "final: step 10, eval accuracy" in done.stdout


def test_read_only_workdir_is_one_line(scratch):
    """A read-only mount in its own namespace where the machine allows it, else a folder
    without write permission (which stops anyone but root)."""
    folder = scratch / "read_only"
    folder.mkdir()
    cmd = " ".join(f"'{a}'" for a in command("read_only/run"))
    if _tmpfs_available():
        script = (f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} && "
                  f"{cmd}")
        done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=scratch, env=env(),
                              capture_output=True, text=True, timeout=300)
    else:
        folder.chmod(0o500)
        done = main(scratch, "read_only/run")
    line = error_line(done, 2)
    assert re.search(r"cannot write to --workdir \S+/read_only/run: (Read-only file system|"
                     r"Permission denied)$", line), line
