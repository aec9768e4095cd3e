"""Command line: ``python -m vit_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR``.

Any config value can be changed with ``--config.key=value`` (e.g. ``--config.total_steps=500``,
``--config.model.variant=S/16``); an unknown key is an error.

Multi-process (multi-host) runs start this same command once per process; see
``vit_jax/distributed.py`` for when it joins a job (``--distributed=auto``: explicit
coordinator settings, an ``srun`` step or an ``mpirun`` job; ``--distributed=on`` on Cloud TPU
pods) and ``python -m vit_jax.launch_local`` to try it on one machine.
"""

from __future__ import annotations

import signal
import sys
import traceback

from absl import flags, logging
from ml_collections import config_flags

from vit_jax import cli, distributed

INTERRUPTED_EXIT = 130  # as a shell reports a Ctrl-C
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", list(distributed.MODES),
    "Join a multi-process job: auto = when coordinator settings are given or srun/mpirun "
    "started several processes; on = always (JAX detects SLURM/MPI/Cloud TPU; use on TPU "
    "pods); off = never.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    f"host:port of process 0's coordinator (default ${distributed.ENV_COORDINATOR}).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, f"Processes in the job (default ${distributed.ENV_NUM_PROCESSES}).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, f"This process's index (default ${distributed.ENV_PROCESS_ID}).")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", None,
    "Seconds without a heartbeat after which a dead process aborts the job (default "
    f"${distributed.ENV_HEARTBEAT_TIMEOUT} or {distributed.DEFAULT_HEARTBEAT_TIMEOUT}).")


def main(argv: list[str]) -> None:
    from vit_jax.runtime import configure_runtime

    configure_runtime()
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    try:  # before any JAX computation: joining must precede the backend's start
        distributed.maybe_initialize(
            _DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
            heartbeat_timeout=_HEARTBEAT.value)
    except ValueError as e:
        cli.fail(str(e))
    from vit_jax.checkpoints import CheckpointSaveError
    from vit_jax.preemption import received_signal
    from vit_jax.train import NonFiniteLossError, train_and_evaluate

    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except ValueError as e:  # config, data and checkpoint errors: the message is the story
        cli.print_error(str(e))
        distributed.exit_now(cli.USAGE_EXIT)
    except NonFiniteLossError as e:  # the run failed, said plainly
        cli.print_error(str(e))
        distributed.exit_now(1)
    except (CheckpointSaveError, OSError) as e:  # a full disk, a lost mount
        cli.print_error(str(e) if isinstance(e, CheckpointSaveError) else
                        f"{e.filename or 'a file'}: {e.strerror or e}; the checkpoints saved "
                        "so far are intact (fix the cause, then rerun to resume)")
        distributed.exit_now(1, abandon_threads=True)
    except KeyboardInterrupt:  # before the loop, or a second Ctrl-C: nothing more is saved
        if distributed.is_multiprocess():
            traceback.print_exc()
        cli.print_error("interrupted; the checkpoints saved so far are intact")
        distributed.exit_now(INTERRUPTED_EXIT)
    except BaseException as e:  # noqa: BLE001 (peers must not hang on this one's failure)
        if not distributed.is_multiprocess() or isinstance(e, SystemExit):
            raise
        traceback.print_exc()
        distributed.exit_now(1)
    if received_signal() == signal.SIGINT:  # saved and stopped on Ctrl-C: say it was cut short
        sys.exit(INTERRUPTED_EXIT)


if __name__ == "__main__":
    cli.run(main)
