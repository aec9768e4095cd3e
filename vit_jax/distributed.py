"""Joining a multi-process (multi-host) job: when to call ``jax.distributed.initialize``.

Every process runs the same ``python -m vit_jax.main ...``; JAX's distributed runtime (a
coordinator service in process 0) tells each one its id and the global device list, after which
the mesh spans all processes' devices and ``train.py`` needs nothing else. Whether to join is
decided by ``--distributed`` (``auto`` by default):

- explicit settings, from flags or the environment (the flag wins), always join (even a
  1-process job: its collectives then run as in N processes, so its results are bitwise
  those of an N-process run on the same mesh):
  ``--coordinator_address`` / ``VIT_JAX_COORDINATOR`` (``host:port`` of process 0),
  ``--num_processes`` / ``VIT_JAX_NUM_PROCESSES``, ``--process_id`` / ``VIT_JAX_PROCESS_ID``;
  a missing one is filled in by JAX's cluster detection (SLURM, Open MPI, Cloud TPU) or is an
  error;
- ``auto`` with nothing explicit joins when a launcher says there are several processes:
  inside an ``srun`` step with ``SLURM_NTASKS > 1``, or under ``mpirun`` with
  ``OMPI_COMM_WORLD_SIZE > 1``; JAX then reads everything from that environment;
- ``on`` always joins, letting JAX detect the cluster. Use it on Cloud TPU pod slices:
  detecting a TPU pod needs a query to the VM metadata server, which ``auto`` does not make on
  every laptop run;
- ``off`` never joins (e.g. a one-process debug run inside a multi-task SLURM allocation).

Failure: when a process dies, the others must not wait for it forever in their next
collective. Often its closed connections fail that collective at once (a Python error, which
``main`` turns into an immediate exit); otherwise it stops sending heartbeats, and after
``heartbeat_timeout`` seconds the coordinator aborts every other process (at once when process
0 itself dies). A process failing with a Python exception exits via ``exit_now``: the normal
exit path would wait in JAX's shutdown barrier for peers blocked waiting for it.

Preemption: with several processes JAX's preemption service catches SIGTERM; the train loop
asks ``preemption.preemption_requested(step)`` every step, so all processes save the same step
and exit cleanly.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

from absl import logging

MODES = ("auto", "on", "off")
ENV_COORDINATOR = "VIT_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "VIT_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "VIT_JAX_PROCESS_ID"
ENV_HEARTBEAT_TIMEOUT = "VIT_JAX_HEARTBEAT_TIMEOUT"

# Seconds without a heartbeat after which a process counts as dead and the job is aborted.
# JAX's default is 100; heartbeats come from a C++ thread, so long compilations or steps never
# delay them and a shorter timeout only costs false alarms on a badly stalled host.
DEFAULT_HEARTBEAT_TIMEOUT = 60
# Waiting for all processes to connect: cluster schedulers may start tasks minutes apart.
INITIALIZATION_TIMEOUT = 300
# How long a process that finished waits at exit for the others to finish too. Processes of a
# healthy run end within seconds of each other (their last steps are collectives).
SHUTDOWN_TIMEOUT = 120


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``maybe_initialize`` will do: ``join`` or not, and the arguments for JAX."""

    join: bool
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    reason: str = ""


def plan(mode: str = "auto", *, coordinator_address: str | None = None,
         num_processes: int | None = None, process_id: int | None = None,
         environ: Mapping[str, str] | None = None) -> Plan:
    """Decides from flags and the environment whether (and how) to join; starts nothing."""
    env = os.environ if environ is None else environ
    if mode not in MODES:
        raise ValueError(f"--distributed={mode!r}; valid values: {', '.join(MODES)}")
    address = coordinator_address or env.get(ENV_COORDINATOR) or None
    count = _int_setting("num_processes", num_processes, env.get(ENV_NUM_PROCESSES), minimum=1)
    pid = _int_setting("process_id", process_id, env.get(ENV_PROCESS_ID), minimum=0)
    if count is not None and pid is not None and pid >= count:
        raise ValueError(f"process_id={pid} must be smaller than num_processes={count}")
    explicit = (address, count, pid) != (None, None, None)
    if mode == "off":
        if explicit:
            raise ValueError("--distributed=off contradicts the coordinator/process settings "
                             f"given (flags or {ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/"
                             f"{ENV_PROCESS_ID}); drop one or the other")
        return Plan(False, reason="--distributed=off")
    if explicit:
        return Plan(True, address, count, pid, reason="explicit settings")
    if mode == "on":
        return Plan(True, reason="--distributed=on: JAX detects the cluster")
    launcher = _launcher_processes(env)
    if launcher:
        name, n = launcher
        return Plan(True, reason=f"{name} started {n} processes")
    return Plan(False, reason="single process (no coordinator, SLURM step or MPI job)")


def _int_setting(name: str, flag_value: int | None, env_value: str | None,
                 minimum: int) -> int | None:
    value: object = flag_value if flag_value is not None else env_value
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def _launcher_processes(env: Mapping[str, str]) -> tuple[str, int] | None:
    """(launcher, process count) when SLURM's srun or Open MPI's mpirun started >1 processes."""
    # The variables JAX's SLURM detection reads; SLURM_STEP_NODELIST exists only inside an srun
    # step, so a batch script running python directly (one process) is not mistaken for a job.
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")
    if all(k in env for k in slurm) and _positive(env["SLURM_NTASKS"]) > 1:
        return "SLURM srun", _positive(env["SLURM_NTASKS"])
    if "OMPI_MCA_orte_hnp_uri" in env and _positive(env.get("OMPI_COMM_WORLD_SIZE", "")) > 1:
        return "Open MPI", _positive(env["OMPI_COMM_WORLD_SIZE"])
    if _positive(env.get("SLURM_NTASKS", "")) > 1 and "SLURM_STEP_NODELIST" not in env:
        logging.warning("SLURM allocation with %s tasks but not inside an srun step: running "
                        "as ONE process. Launch with `srun python -m vit_jax.main ...` to use "
                        "all tasks.", env["SLURM_NTASKS"])
    return None


def _positive(text: str) -> int:
    return int(text) if text.isdigit() else 0


def maybe_initialize(mode: str = "auto", *, coordinator_address: str | None = None,
                     num_processes: int | None = None, process_id: int | None = None,
                     heartbeat_timeout: int | None = None) -> int:
    """Joins the multi-process job if ``plan`` says so; returns this process's index.

    Must run before anything starts JAX's backend (no ``jax.devices()``, no arrays).
    ``heartbeat_timeout`` defaults to ``$VIT_JAX_HEARTBEAT_TIMEOUT`` or 60 seconds.
    """
    p = plan(mode, coordinator_address=coordinator_address, num_processes=num_processes,
             process_id=process_id)
    if not p.join:
        logging.info("Not joining a multi-process job: %s", p.reason)
        return 0
    import jax

    heartbeat = heartbeat_timeout or _int_setting(
        "heartbeat_timeout", None, os.environ.get(ENV_HEARTBEAT_TIMEOUT), minimum=1)
    heartbeat = heartbeat or DEFAULT_HEARTBEAT_TIMEOUT
    try:
        jax.distributed.initialize(
            coordinator_address=p.coordinator_address, num_processes=p.num_processes,
            process_id=p.process_id, initialization_timeout=INITIALIZATION_TIMEOUT,
            heartbeat_timeout_seconds=heartbeat, shutdown_timeout_seconds=SHUTDOWN_TIMEOUT)
    except ValueError as e:  # JAX found no cluster to fill in what was not given
        raise ValueError(
            f"cannot join the multi-process job ({p.reason}): {e} Give all of "
            f"--coordinator_address=HOST:PORT (process 0's host), --num_processes and "
            f"--process_id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}), "
            "or run under srun/mpirun/a Cloud TPU pod, or use --distributed=off.") from None
    index = jax.process_index()
    if index != 0:  # progress and warnings come from process 0; others report only errors
        logging.set_verbosity(logging.ERROR)
    logging.info("Joined a %d-process job as process %d (%s, heartbeat timeout %ds)",
                 jax.process_count(), index, p.reason, heartbeat)
    return index


def is_multiprocess() -> bool:
    """True once this process has joined a job (without starting JAX's backend)."""
    import jax

    return jax.distributed.is_initialized()


def exit_now(code: int, *, abandon_threads: bool = False) -> NoReturn:
    """Ends this process with ``code`` at once, skipping JAX's shutdown barrier.

    On failure the barrier would keep a process waiting for peers that are themselves blocked
    in a collective waiting for it (until ``SHUTDOWN_TIMEOUT``); exiting without it lets the
    heartbeat check abort the others. Single-process runs exit normally, unless
    ``abandon_threads``: threads still at work (a failed save's writers) would print their
    errors while the interpreter shuts down under them.
    """
    if not is_multiprocess() and not abandon_threads:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
