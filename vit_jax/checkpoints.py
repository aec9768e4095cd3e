"""Checkpointing of a whole training run in a workdir, and preemption handling.

One checkpoint step holds everything needed to continue a run bit-exactly:

    <workdir>/checkpoints/<step>/
        model/    nnx.state(model) as a pure dict (params + RNG/stat variables)
        opt/      nnx.state(optimizer) as a pure dict (optax state + update count)
        train/    {"step", "rng"}
        data/     the input iterator's JSON state (e.g. grain's get_state())
        config/   the run's config as JSON, so a checkpoint explains itself
        metrics/  (Orbax) the eval metrics used to keep the best step

Orbax writes each step into `<step>.orbax-checkpoint-tmp-*` and renames it only after all
items (on all hosts) are written, so a save cut short by a crash or SIGKILL is never listed
as a step: restore falls back to the previous complete one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from vit_jax.logs import drop_messages
from vit_jax.paths import absolute

_CKPT_SUBDIR = "checkpoints"


# Orbax warns on every save without metrics once best-tracking is on; periodic saves between
# evals are expected to have none, so the warning is only noise.
drop_messages("did not provide metrics")


@dataclasses.dataclass
class Restored:
    """What `restore_latest` brings back besides the model/optimizer it updated in place."""

    step: int
    rng: Any
    data_state: dict[str, Any] | None
    config: dict[str, Any] | None


def _pure(obj: Any) -> dict[str, Any]:
    """nnx object / State / pure dict -> pure dict of arrays (what Orbax stores)."""
    if isinstance(obj, nnx.State):
        return nnx.to_pure_dict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    return nnx.to_pure_dict(nnx.state(obj))


def _host_scalars(tree: Any) -> Any:
    """0-d arrays -> numpy: a scalar living on one device is not a global array, which a
    multi-process Orbax save rejects. PRNG keys keep their dtype (Orbax stores key data)."""

    def convert(x: Any) -> Any:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        if np.ndim(x) == 0 and not isinstance(x, jax.ShapeDtypeStruct):
            return np.asarray(x)
        return x

    return jax.tree.map(convert, tree)


def _host_key(rng: Any) -> Any:
    """A raw uint32 key -> numpy, for saving and as the restore target: a key committed to
    one device is not a global array, which multi-process Orbax rejects. Typed keys pass."""
    if rng is None or jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return rng
    return np.asarray(rng)


def abstract(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of `tree`: the restore target, so restored arrays land
    with the layout of a freshly built (possibly sharded or abstract) model."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _config_json(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_json_best_effort"):  # ml_collections.ConfigDict
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(dict(config), default=repr))


class Checkpointer:
    """Orbax CheckpointManager for one workdir: async saves, keep last N + the best.

    Retention: the newest `keep` steps, plus (if `keep_best`) the step with the best
    `best_metric` among those saved with metrics, even when it is older than the last N.
    """

    def __init__(
        self,
        workdir: str | epath.PathLike,
        *,
        keep: int = 3,
        keep_best: bool = True,
        best_metric: str = "eval/accuracy",
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the latest step is needed to resume), got {keep}")
        self.best_metric = best_metric
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
        best_fn = None
        if keep_best:
            best_fn = lambda metrics: float(metrics[best_metric])
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=1,
                    # Steps saved without eval metrics are governed by LatestN alone.
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # best_fn is also what makes Orbax write the metrics item at all.
            best_fn=best_fn,
            best_mode=best_mode,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # Remove leftovers of interrupted saves.
            create=True,
        )
        self.directory = epath.Path(absolute(workdir)) / _CKPT_SUBDIR
        # Orbax deletes the leftovers of interrupted saves when it opens the directory; note
        # them first so the run can say what it found.
        self.discarded = sorted(p.name for p in self.directory.glob("*.orbax-checkpoint-tmp*")) \
            if self.directory.exists() else []
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    # ------------------------------------------------------------------ queries

    def latest_step(self) -> int | None:
        """Newest complete (finalised) step, or None."""
        return self._mngr.latest_step()

    def best_step(self) -> int | None:
        """Step with the best `best_metric` (latest step when not tracking the best)."""
        return self._mngr.best_step()

    def all_steps(self) -> list[int]:
        """All complete steps on disk, ascending."""
        return sorted(self._mngr.all_steps())

    # ------------------------------------------------------------------ save

    def save(
        self,
        step: int,
        *,
        model: Any,
        optimizer: Any,
        rng: jax.Array,
        data_state: Mapping[str, Any] | None = None,
        config: Any = None,
        metrics: Mapping[str, Any] | None = None,
        wait: bool = False,
    ) -> bool:
        """Starts saving `step` (returns once arrays are copied off the devices).

        `metrics` with `best_metric` in it makes the step a best-checkpoint candidate.
        `wait=True` blocks until the step is finalised (use it before exiting on
        preemption). Returns False when `step` already exists (e.g. a periodic save
        just wrote it), instead of Orbax's StepAlreadyExistsError.
        """
        if step in self._mngr.all_steps():
            logging.info("Checkpoint for step %d already exists; not saving again.", step)
            return False
        tracked = None
        if metrics is not None and self.best_metric in metrics:
            tracked = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
        args = ocp.args.Composite(
            model=ocp.args.StandardSave(_host_scalars(_pure(model))),
            opt=ocp.args.StandardSave(_host_scalars(_pure(optimizer))),
            train=ocp.args.StandardSave(
                {"step": np.asarray(step, np.int64), "rng": _host_key(rng)}),
            data=ocp.args.JsonSave(dict(data_state or {})),
            config=ocp.args.JsonSave(_config_json(config)),
        )
        saved = self._mngr.save(step, args=args, metrics=tracked, force=True)
        if wait:
            self._mngr.wait_until_finished()
        return saved

    # ------------------------------------------------------------------ restore

    def restore(
        self, step: int, *, model: Any, optimizer: Any, rng: jax.Array | None = None
    ) -> Restored:
        """Restores `step` into `model` and `optimizer` in place (their current arrays give
        the target shapes/dtypes/shardings); `rng` is a template for the saved key."""
        model_state, opt_state = nnx.state(model), nnx.state(optimizer)
        train_target = {"step": np.zeros((), np.int64), "rng": _host_key(rng)}
        args = ocp.args.Composite(
            model=ocp.args.StandardRestore(abstract(nnx.to_pure_dict(model_state))),
            opt=ocp.args.StandardRestore(abstract(nnx.to_pure_dict(opt_state))),
            train=ocp.args.StandardRestore(abstract(train_target) if rng is not None else None),
            data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore(),
        )
        out = self._mngr.restore(step, args=args)
        nnx.replace_by_pure_dict(model_state, out["model"])
        nnx.update(model, model_state)
        nnx.replace_by_pure_dict(opt_state, out["opt"])
        nnx.update(optimizer, opt_state)
        return Restored(
            step=int(out["train"]["step"]),
            rng=out["train"]["rng"],
            data_state=out["data"] or None,
            config=out["config"] or None,
        )

    def restore_latest(
        self, *, model: Any, optimizer: Any, rng: jax.Array | None = None
    ) -> Restored | None:
        """Resumes from the newest complete step; None when the workdir has no checkpoint."""
        step = self.latest_step()
        if step is None:
            return None
        return self.restore(step, model=model, optimizer=optimizer, rng=rng)

    # ------------------------------------------------------------------ lifecycle

    def wait_until_finished(self) -> None:
        """Blocks until the in-flight async save is finalised."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases Orbax's threads."""
        self._mngr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- preemption

_PREEMPTED = threading.Event()


def install_preemption_handler(signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
    """On SIGTERM, only set a flag: the loop polls `preemption_requested()` at a step
    boundary, saves synchronously and exits cleanly (nothing is saved from inside a signal
    handler, where the train state may be half-updated).

    Multi-process runs skip this: JAX's preemption service (`jax.distributed`) owns
    SIGTERM there and agrees on a common step across hosts.
    """
    if jax.process_count() > 1:
        logging.info("Multi-process run: relying on JAX's preemption sync point.")
        return

    def handler(signum: int, frame: Any) -> None:
        logging.warning("Received signal %d: will checkpoint and exit at the next step.", signum)
        _PREEMPTED.set()

    for sig in signals:
        signal.signal(sig, handler)


def preemption_requested(step: int | None = None) -> bool:
    """True once a preemption signal arrived. With several processes and a `step`, asks
    JAX's preemption sync point so that every host stops at the same step."""
    if jax.process_count() > 1 and step is not None:
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # Preemption service not enabled: fall back to the local flag.
            pass
    return _PREEMPTED.is_set()


def reset_preemption() -> None:
    """Clears the flag (tests, or a loop that handled the signal and keeps going)."""
    _PREEMPTED.clear()
