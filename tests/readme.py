"""The README, run as a user would run it (collected by sybil from ``conftest.py``).

Every fenced ``bash`` and ``python`` block of README.md runs in order, in a fresh scratch
directory that holds only links to ``configs/`` and ``scripts/``, so every path the README
types is relative to a directory other than the repository. Python blocks share one namespace,
as in a notebook. Shell commands run in their smoke form: a training command gets the short
step counts of ``SMOKE`` appended (through ``--config.*`` overrides, so the command line itself
is the README's); everything else runs exactly as written.

A command that cannot run on this machine (a SLURM cluster, a TPU pod, a benchmark that needs a
quiet machine for a quarter of an hour) carries ``(not run here: REASON)`` in the comment just
above it. It is still checked: its ``--config`` file must load and every ``--config.*`` key must
exist; a ``make`` target must exist. ``make test`` and ``make train`` are what ``.ci/run`` runs
as written on a fresh clone; here ``make train`` runs in its smoke form, so that the later
examples find ``runs/quickstart``.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sybil import Example

from vit_jax import cli

REPO = Path(__file__).resolve().parents[1]
LINKED = ("configs", "scripts")  # what a user's checkout has besides the package
SCRATCH_KEY = "__readme_scratch__"

_TRAIN_SMOKE = ("--config.total_steps=4 --config.optim.warmup_steps=1 "
                "--config.eval_every_steps=2 --config.checkpoint_every_steps=2 "
                "--config.log_every_steps=2")
_SWEEP_SMOKE = ("--config.base.total_steps=2 --config.base.optim.warmup_steps=0 "
                "--config.base.eval_every_steps=2 --config.base.checkpoint_every_steps=2 "
                "--config.base.data.shapes.num_train=256 --config.base.data.shapes.num_test=64 "
                "--config.base.eval_batch_size=64 --config.measure.throughput_steps=1")
# (pattern at the start of a command, what it runs as here)
SMOKE: tuple[tuple[str, str], ...] = (
    (r"make train$", "python -m vit_jax.main --config=configs/quickstart.py "
                     "--workdir=runs/quickstart --config.total_steps=20 "
                     "--config.optim.warmup_steps=2 --config.eval_every_steps=10 "
                     "--config.checkpoint_every_steps=10"),
    (r"python -m vit_jax\.main ", "{command} " + _TRAIN_SMOKE),
    (r"scripts/launch_local\.sh ", "{command} " + _TRAIN_SMOKE),
    (r"python -m vit_jax\.sweep ", "{command} " + _SWEEP_SMOKE),
)
RUN_BY_CI = ("make test", "make train")  # .ci/run runs these as written
NOT_RUN = re.compile(r"\(not run here: ([^)]+)\)")
TIMEOUT_S = 900


@dataclass
class Command:
    text: str  # one command, continuation lines joined as bash joins them
    not_run_reason: str | None  # from "(not run here: ...)" in the comments above it


def commands(block: str) -> list[Command]:
    """The commands of a bash block with the comment lines that precede each."""
    out, comments, pending = [], [], ""
    for line in block.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            comments.append(stripped)
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1]
            continue
        text = re.sub(r"\s+#\s.*$", "", pending + stripped)  # a trailing comment
        pending = ""
        reason = next((m.group(1) for c in comments for m in [NOT_RUN.search(c)] if m), None)
        out.append(Command(text, reason))
        comments = []
    assert not pending, f"a command ends with a line continuation: {pending!r}"
    return out


def smoke_form(command: str) -> str:
    for pattern, form in SMOKE:
        if re.match(pattern, command):
            return form.format(command=command)
    return command


_scratch: list[Path] = []  # one per test process, kept until it exits


def enter_scratch_dir(namespace: dict) -> None:
    """sybil setup: a scratch directory as the working directory of the whole README.

    pytest may tear the README down and set it up again when a worker runs other tests in
    between; the scratch directory (with the runs trained above) survives that.
    """
    if not _scratch:
        scratch = Path(tempfile.mkdtemp(prefix="readme_"))
        for name in LINKED:
            (scratch / name).symlink_to(REPO / name)
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        _scratch.append(scratch)
    namespace[SCRATCH_KEY] = os.getcwd()
    os.chdir(_scratch[0])


def leave_scratch_dir(namespace: dict) -> None:
    os.chdir(namespace.pop(SCRATCH_KEY))


def _env() -> dict[str, str]:
    """As a user's shell: the venv's python first on PATH, JAX's default devices."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def check_not_run(command: Command) -> None:
    """What can be checked of a command this machine cannot run: its config and keys, its
    make target and variables (dry run), or, for one of our ``python -m`` command lines, that
    each flag it types is in its ``--help``."""
    assert command.not_run_reason.strip(), command.text
    make = re.search(r"(?:^|\s)make\s+(.*)$", command.text)  # also under a launcher (srun)
    if make:
        dry = subprocess.run(["make", "-n", "-C", str(REPO), *shlex.split(make.group(1))],
                             capture_output=True, text=True)
        assert dry.returncode == 0, f"{command.text}: {dry.stderr}"
        return
    module = re.match(r"python -m ([\w.]+)", command.text)
    configs = re.findall(r"--config=([^\s\"']+)", command.text)
    if module and not configs:  # a command line of ours: each flag it types must exist
        usage = subprocess.run([sys.executable, "-m", module.group(1), "--help"],
                               capture_output=True, text=True, cwd=REPO, env=_env())
        assert usage.returncode == 0, f"{command.text}: --help failed: {usage.stderr}"
        for flag in re.findall(r"(--\w+)=", command.text):
            assert flag in usage.stdout, f"{command.text}: no {flag} in its --help"
        return
    assert configs, f"nothing to check in {command.text!r}"
    config, problem = cli.config_from_flag(configs[0])
    assert problem is None, problem
    for key in re.findall(r"--config\.([\w.]+)=", command.text):
        problem = cli.unknown_key(config, key)
        assert problem is None, problem


def run_shell_block(example: Example) -> None:
    """sybil evaluator of ```bash blocks."""
    for command in commands(example.parsed):
        if command.not_run_reason is not None:
            check_not_run(command)
            continue
        if command.text == "make test":
            assert "make test" in (REPO / ".ci" / "run").read_text()
            continue
        if command.text in RUN_BY_CI:
            assert command.text in (REPO / ".ci" / "run").read_text()
        done = subprocess.run(["bash", "-c", smoke_form(command.text)], env=_env(),
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command.text}\nexit {done.returncode}:\n{output[-4000:]}"
        for problem in ("Traceback", "Warning:", "leaked"):  # a finished run ends cleanly
            assert problem not in output, f"{command.text}: {problem}\n{output[-4000:]}"
