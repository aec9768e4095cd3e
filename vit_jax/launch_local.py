"""Runs one training job as N processes on this machine, as it would run on N hosts.

    python -m vit_jax.launch_local 2 configs/quickstart.py runs/mh --config.total_steps=100

Each process is ``python -m vit_jax.main --config=CONFIG --workdir=WORKDIR [extra flags]`` with
``JAX_NUM_CPU_DEVICES`` CPU devices (``--devices_per_process``, default
``$JAX_NUM_CPU_DEVICES`` or 4) and the coordinator settings of ``vit_jax/distributed.py``
(process 0 serves on a free localhost port). Lines are prefixed with ``[i]``. The launcher exits
with the first non-zero exit code and kills the other processes at once (they would otherwise
abort only after the heartbeat timeout); Ctrl-C or SIGTERM kills all of them. With N=1 the one
process still joins the distributed runtime, so it computes bitwise what N processes compute on
the same mesh. A multi-host test rig, not a cluster scheduler: on real clusters srun / gcloud
start the processes (see the README).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from vit_jax import distributed
from vit_jax.paths import absolute


def free_port() -> int:
    """A port the OS reports free now (another program could take it before process 0 binds,
    in which case process 0 fails to start and the launcher reports it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(index: int, count: int, port: int, devices: int,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of process ``index``: its coordinator settings and CPU devices."""
    env = dict(os.environ if base is None else base)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.update({
        "JAX_NUM_CPU_DEVICES": str(devices),
        distributed.ENV_COORDINATOR: f"127.0.0.1:{port}",
        distributed.ENV_NUM_PROCESSES: str(count),
        distributed.ENV_PROCESS_ID: str(index),
        "PYTHONUNBUFFERED": "1",  # lines appear as they are printed, interleaved in order
    })
    return env


# Gloo (the CPU collectives) prints "[Gloo] Rank i is connected to n peer ranks ..." per device
# and collective group, from several threads at once (lines arrive spliced): a handshake report,
# never actionable, that buried the training log.
_NOISE = re.compile(r"\[Gloo\]|is connected to \d|peer ranks")


def _forward(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        if _NOISE.search(line):
            continue
        out.write(prefix + line)
        out.flush()
    stream.close()


def _kill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL to each live process's group (its grain workers too). Not SIGTERM: in a
    multi-process job JAX's preemption service catches SIGTERM and the process keeps going."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.killpg(p.pid, signal.SIGKILL)


def launch(num_processes: int, argv: list[str], *, devices_per_process: int = 4,
           port: int | None = None, out=None) -> int:
    """Starts ``python -m vit_jax.main *argv`` ``num_processes`` times; returns the job's exit
    code: 0 when all succeed, else the first failure's code (the others are killed)."""
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError("num_processes and devices_per_process must be >= 1, got "
                         f"{num_processes} and {devices_per_process}")
    out = sys.stdout if out is None else out
    port = port or free_port()
    procs, threads = [], []
    try:
        for i in range(num_processes):
            p = subprocess.Popen(
                [sys.executable, "-m", "vit_jax.main", *argv],
                env=process_env(i, num_processes, port, devices_per_process),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)  # own process group: killable with its children
            procs.append(p)
            t = threading.Thread(target=_forward, args=(p.stdout, f"[{i}] ", out), daemon=True)
            t.start()
            threads.append(t)
        first, code = _wait(procs)
    except KeyboardInterrupt:
        first, code = None, 130
    finally:
        _kill(procs)
        for p in procs:
            p.wait()
        for t in threads:
            t.join(timeout=5)
    if code:
        who = "interrupted" if first is None else f"process {first} failed"
        out.write(f"launch_local: {who}, exit code {code}; the other processes were killed\n")
    return code


def _wait(procs: list[subprocess.Popen]) -> tuple[int | None, int]:
    """(index, exit code) of the first process to fail, or (None, 0) when all succeed."""
    while True:
        codes = [p.poll() for p in procs]
        for i, c in enumerate(codes):
            if c not in (None, 0):  # killed by signal N -> 128 + N, as a shell reports it
                return i, c if c > 0 else 128 - c
        if all(c == 0 for c in codes):
            return None, 0
        time.sleep(0.2)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.launch_local",
        description="Run one vit_jax training job as N local processes (CPU devices).",
        epilog="Unrecognised arguments (e.g. --config.total_steps=100, --heartbeat_timeout=10) "
               "are passed to every process's vit_jax.main.")
    parser.add_argument("num_processes", type=int)
    parser.add_argument("config", help="config file, e.g. configs/quickstart.py[:ARG]")
    parser.add_argument("workdir")
    parser.add_argument("--devices_per_process", type=int,
                        default=int(os.environ.get("JAX_NUM_CPU_DEVICES", 4)),
                        help="CPU devices per process (default $JAX_NUM_CPU_DEVICES or 4)")
    parser.add_argument("--port", type=int, default=None,
                        help="coordinator port on 127.0.0.1 (default: a free one)")
    known, extra = parser.parse_known_args(args)
    signal.signal(signal.SIGTERM, _interrupt)  # e.g. a CI timeout: take the processes along
    argv = [f"--config={known.config}", f"--workdir={absolute(known.workdir)}", *extra]
    return launch(known.num_processes, argv, devices_per_process=known.devices_per_process,
                  port=known.port)


if __name__ == "__main__":
    sys.exit(main())
