"""The checkpoint format of a training run: writing it (``Checkpointer``) and reading it back
without the optimizer (``read_model``, ``read_config``, ``complete_steps``).

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

import contextlib
import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from vit_jax import ema, integrity
from vit_jax.logs import drop_messages, drop_unraisable
from vit_jax.paths import absolute
from vit_jax.tree import path_names

_CKPT_SUBDIR = "checkpoints"
WEIGHTS = ("raw", "ema")  # what read_model loads: the trained parameters or their average
UNUSABLE_SUFFIX = ".unusable"  # a damaged step passed over on resume, kept for a post-mortem


# Orbax warns on every save without metrics once best-tracking is on (periodic saves between
# evals have none by design), and on every read-only manager (ours, to read without cleaning).
drop_messages("did not provide metrics", "read_only=True, setting save_interval_steps",
              "Given directory is read only")
# A failed asynchronous save makes Orbax's threads log every exception they saw (hundreds of
# lines) before the error reaches the run, which reports it in one line (CheckpointSaveError).
drop_messages("raised an exception", "exception was never retrieved",
              "Event loop is closed", "Handler Commit operations", "Save Finalize thread")
drop_messages("exception was never retrieved", "Event loop is closed", logger="asyncio")
# ... and TensorStore's callbacks into Orbax's closed event loops report their own.
drop_unraisable(RuntimeError, "Event loop is closed")


@dataclasses.dataclass
class Restored:
    """What `restore_latest` brings back besides the model/optimizer it updated in place."""

    step: int
    rng: Any
    data_state: dict[str, Any] | None
    config: dict[str, Any] | None
    skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (step, why)


class CheckpointCorruptError(ValueError):
    """A checkpoint step's files are not as they were written (or none is usable)."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full)."""


def _non_finite(model: Any) -> str | None:
    """Why ``model``'s parameters cannot be trained on (a NaN or inf), or None."""
    for path, x in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(
            nnx.state(model, nnx.Param))):
        if not bool(jnp.isfinite(x).all()):
            return f"parameter {'/'.join(path_names(path))} holds NaN or inf"
    return None


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
    Older steps are deleted only once a newer save is known to be complete (``_prune``).
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
        verify: bool = True,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the latest step is needed to resume), got {keep}")
        self.best_metric, self.async_save, self.verify_steps = best_metric, async_save, verify
        self._sealing: int | None = None  # the step being saved, for ``_seal``
        self.keep, self.keep_best = keep, keep_best
        best_fn = (lambda metrics: float(metrics[best_metric])) if keep_best else None
        options = ocp.CheckpointManagerOptions(
            # best_fn is also what makes Orbax write the metrics item at all.
            best_fn=best_fn,
            best_mode=best_mode,
            # No Orbax retention: it deletes old steps even when the new one failed to write
            # (0.12: a failure seen by its finalize thread's error check is only logged), so a
            # full disk could cost a good checkpoint. ``_prune`` deletes after a save is final.
            # Always Orbax's async path (``async_save=False`` waits for each save): its
            # post-finalization hook is where a step is sealed (``vit_jax.integrity``).
            enable_async_checkpointing=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._seal),
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
        # Orbax finishes the previous save before starting this one anyway; doing it first
        # keeps ``_sealing`` naming the step whose hook runs.
        self.wait_until_finished()
        self._sealing = step
        with self._reporting_save_errors():
            saved = self._mngr.save(step, args=args, metrics=tracked, force=True)
        if wait or not self.async_save:
            self.wait_until_finished()
        return saved

    def _seal(self) -> None:
        """Orbax's post-finalization hook (process 0, every process's files written, the step
        not yet renamed into place): records the step's files inside it."""
        found = sorted(Path(self.directory).glob(f"{self._sealing}.orbax-checkpoint-tmp*"))
        if len(found) != 1:
            raise RuntimeError(f"cannot find the temporary directory of step {self._sealing} "
                               f"in {self.directory} (found {[p.name for p in found]})")
        integrity.seal(found[0])

    def check_for_errors(self) -> None:
        """Raises ``CheckpointSaveError`` (one line: the step, the path and the cause) if the
        last asynchronous save failed, e.g. on a full disk."""
        with self._reporting_save_errors():
            self._mngr.check_for_errors()

    @contextlib.contextmanager
    def _reporting_save_errors(self):
        """Whatever Orbax raises about a save (when it starts, when it is waited for, when
        its errors are checked), the run sees one ``CheckpointSaveError``."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 -- whatever Orbax raised, say it plainly
            raise CheckpointSaveError(self._save_failure(e)) from None

    def _save_failure(self, error: BaseException) -> str:
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return (f"could not save the checkpoint of step {self._sealing} to {self.directory}: "
                f"{type(cause).__name__}: {first}; the earlier checkpoints are intact (free "
                "space or fix the path, then rerun to resume)")

    # ------------------------------------------------------------------ restore

    def restore(
        self, step: int, *, model: Any, optimizer: Any, rng: jax.Array | None = None
    ) -> Restored:
        """Restores `step` into `model` and `optimizer` in place (their current arrays give
        the target shapes/dtypes/shardings); `rng` is a template for the saved key."""
        model_state, opt_state = nnx.state(model), nnx.state(optimizer)
        targets = {"model": abstract(nnx.to_pure_dict(model_state)),
                   "opt": abstract(nnx.to_pure_dict(opt_state))}
        for item, target in targets.items():  # before Orbax reads a single array
            _check_layout(Path(self.directory) / str(step) / item, target)
        train_target = {"step": np.zeros((), np.int64), "rng": _host_key(rng)}
        args = ocp.args.Composite(
            model=ocp.args.StandardRestore(targets["model"]),
            opt=ocp.args.StandardRestore(targets["opt"]),
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

    def verify(self, step: int) -> str | None:
        """None when ``step``'s files are as they were written; else why not (one line)."""
        return integrity.check(Path(self.directory) / str(step)) if self.verify_steps else None

    def restore_latest(
        self, *, model: Any, optimizer: Any, rng: jax.Array | None = None
    ) -> Restored | None:
        """Resumes from the newest step that verifies and restores finite; None when the
        workdir has no checkpoint. Steps passed over are in ``Restored.skipped`` with why,
        and renamed ``<step>.unusable`` so that the run saves them anew; when none is usable,
        ``CheckpointCorruptError`` lists every step and why.

        A step that verifies but does not restore is not damaged: its error (another model or
        optimizer than the one given) is raised as it is.
        """
        skipped: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            reason = self.verify(step)
            if reason is None:
                restored = self.restore(step, model=model, optimizer=optimizer, rng=rng)
                reason = _non_finite(model)
                if reason is None:
                    restored.skipped = skipped
                    self._set_aside([s for s, _ in skipped])
                    return restored
            skipped.append((step, reason))
        if not skipped:
            return None
        listing = "; ".join(f"step {s}: {why}" for s, why in skipped)
        raise CheckpointCorruptError(
            f"no usable checkpoint in {self.directory}: {listing}. Move the workdir aside to "
            "start over, or --config.checkpoint.verify=False to use a step whose integrity "
            "record is missing")

    def _set_aside(self, steps: list[int]) -> None:
        """Renames unusable steps newer than the one resumed from to ``<step>.unusable``: the
        run will save those steps again, and their files stay for a post-mortem."""
        if not steps:
            return
        if jax.process_index() == 0:
            for step in steps:
                target = self.directory / f"{step}{UNUSABLE_SUFFIX}"
                n = 1
                while target.exists():
                    n += 1
                    target = self.directory / f"{step}{UNUSABLE_SUFFIX}{n}"
                (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("vit_jax_checkpoints_set_aside")
        self._mngr.reload()

    # ------------------------------------------------------------------ lifecycle

    def wait_until_finished(self) -> None:
        """Blocks until the in-flight async save is finalised (``CheckpointSaveError`` if
        it failed), then deletes the steps retention no longer keeps."""
        with self._reporting_save_errors():
            self._mngr.wait_until_finished()
            self._mngr.check_for_errors()
        self._prune()

    def _prune(self) -> None:
        """Deletes every step but the newest ``keep`` and (``keep_best``) the best one, among
        the steps complete on disk (re-read: a save whose failure Orbax only logged is not
        counted as a newer step)."""
        self._mngr.reload()
        steps = sorted(self._mngr.all_steps())
        kept = set(steps[-self.keep:])
        best = self._mngr.best_step() if self.keep_best else None
        if best is not None:
            kept.add(best)
        for step in steps:
            if step not in kept:
                self._mngr.delete(step)

    def close(self) -> None:
        """Finishes pending saves (``CheckpointSaveError`` if one failed), prunes, and
        releases Orbax's threads."""
        self.wait_until_finished()
        with self._reporting_save_errors():
            self._mngr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- reading (no optimizer)


class CheckpointNotFoundError(FileNotFoundError, ValueError):
    """No checkpoint at the path (a ValueError too, so the command line prints it plainly)."""


def _parts(path: Path) -> tuple[Path, int | None] | None:
    """(the ``checkpoints`` directory, the step ``path`` names) for a training workdir, its
    ``checkpoints`` directory or a ``checkpoints/<step>`` directory; None for anything else."""
    if (path / _CKPT_SUBDIR).is_dir():
        return path / _CKPT_SUBDIR, None
    if path.name.isdigit() and (path / "model").is_dir():
        return path.parent, int(path.name)
    if path.name == _CKPT_SUBDIR and path.is_dir():
        return path, None
    return None


def is_run_checkpoint(path: str | Path) -> bool:
    """A training workdir, its ``checkpoints`` directory or one ``checkpoints/<step>``."""
    return _parts(absolute(path)) is not None


def _read_only(directory: Path, **handlers: Any) -> ocp.CheckpointManager:
    """A manager that never writes or cleans (a running job may own the directory)."""
    options = ocp.CheckpointManagerOptions(create=False, read_only=True)
    return ocp.CheckpointManager(directory, options=options,
                                 item_handlers=handlers or None)


def complete_steps(path: str | Path) -> list[int]:
    """The complete (finalised) steps of a run, ascending; [] when it has none yet."""
    found = _parts(absolute(path))
    if found is None or not found[0].is_dir():
        return []
    with _read_only(found[0]) as manager:
        return sorted(manager.all_steps())


def locate(path: str | Path, step: int | None = None) -> tuple[Path, int]:
    """(the ``checkpoints`` directory, the step) for a workdir or a ``checkpoints/<step>`` dir;
    ``step`` None means the newest complete one."""
    path = absolute(path)
    found = _parts(path)
    if found is None:
        raise CheckpointNotFoundError(
            f"{path} is not a checkpoint: expected a training workdir (with checkpoints/), a "
            "checkpoints/<step> directory, a converted .npz (or the directory convert wrote it "
            "to), a Google .npz or a timm .safetensors file")
    directory, named = found
    if named is not None:
        if step is not None and step != named:
            raise ValueError(f"{path} is step {named} but step={step} was asked for")
        step = named
    steps = complete_steps(directory)
    if not steps:
        raise CheckpointNotFoundError(f"no complete checkpoint in {directory} (a run stopped "
                                      "before its first save leaves none)")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise CheckpointNotFoundError(f"no step {step} in {directory}; steps there: {steps}")
    return directory, step


def read_config(path: str | Path, step: int | None = None) -> dict[str, Any]:
    """The run config saved with a step (as JSON): its model, data and pp strings."""
    directory, step = locate(path, step)
    with _read_only(directory, config=ocp.JsonCheckpointHandler()) as manager:
        out = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return out["config"] or {}


def read_model(path: str | Path, step: int | None = None, *, verify: bool = True,
               weights: str = "raw") -> tuple[dict, dict, str]:
    """(the model state as a nested dict of arrays, the saved config, a description) of a
    step; ``verify`` checks the step's files first (``CheckpointCorruptError`` naming the
    damage and the other steps). ``weights="ema"``: the parameters are the run's weight
    average (``optim.ema_decay``), read from the optimizer state; "raw" never reads it.

    The arrays land on this process's first device whatever mesh wrote them: the restore
    target comes from the saved array metadata, so no model needs building first.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}; valid: {', '.join(WEIGHTS)}")
    directory, step = locate(path, step)
    reason = integrity.check(directory / str(step)) if verify else None
    if reason is not None:
        others = [s for s in complete_steps(directory) if s != step]
        raise CheckpointCorruptError(
            f"{directory / str(step)} is damaged: {reason}. Other steps there: {others} "
            "(load one with step=N), or pass verify=False to read it anyway")
    items = ("model", "opt") if weights == "ema" else ("model",)
    handlers = {item: ocp.StandardCheckpointHandler() for item in items}
    args = {item: ocp.args.StandardRestore(_saved_layout(directory / str(step) / item))
            for item in items}
    with _read_only(directory, **handlers, config=ocp.JsonCheckpointHandler()) as manager:
        out = manager.restore(step, args=ocp.args.Composite(**args,
                                                            config=ocp.args.JsonRestore()))
    description = f"{directory.parent} (step {step})"
    model = out["model"]
    if weights == "ema":
        average = ema.find(out["opt"])
        if average is None:
            raise ValueError(f"{description} keeps no weight average (trained without "
                             "optim.ema_decay); load weights='raw'")
        model = ema.overlay(model, average)
        description += ", weight average"
    return model, out["config"] or {}, description


def _layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"encoder/0/mlp/kernel": (shape, dtype)}`` of a tree of arrays or shape structs."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(path_names(path)): (tuple(x.shape), str(x.dtype)) for path, x in leaves}


def _check_layout(item: Path, target: Any) -> None:
    """A ``ValueError`` naming the arrays whose shape or dtype differ between the saved
    ``item`` and ``target`` (another model or optimizer than the one saved). Checked on the
    metadata, so Orbax never starts reading arrays it would fail on."""
    saved, wanted = _layout(_saved_layout(item)), _layout(target)
    if saved == wanted:
        return
    differences = [f"{name}: saved {saved[name][0]} {saved[name][1]}, "
                   f"this config {wanted[name][0]} {wanted[name][1]}"
                   for name in sorted(saved.keys() & wanted.keys()) if saved[name] != wanted[name]]
    differences += [f"{name}: only in the checkpoint" for name in sorted(saved.keys() - wanted)]
    differences += [f"{name}: not in the checkpoint" for name in sorted(wanted.keys() - saved)]
    more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
    raise ValueError(f"{item.name}: " + "; ".join(differences[:3]) + more)


def _saved_layout(item: Path) -> Any:
    """Restore target of a saved item: its arrays' shapes and dtypes, on this process's first
    device."""
    meta = ocp.StandardCheckpointHandler().metadata(item)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        getattr(meta, "tree", meta))
