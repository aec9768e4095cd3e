"""The training job: ``train_and_evaluate(config, workdir)``, one readable function in stages.

Stages: validate the config, claim the workdir, input pipeline, model and optimizer, checkpoint
and resume, jitted steps, then the loop (progress, periodic eval, checkpoints, clean stops on
SIGTERM or Ctrl-C, NaN guard). Whatever ends the run, a save in flight finishes first and the
workdir's lock is released.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections as mlc
import numpy as np
from flax import nnx

from vit_jax import data, ema, evaluators, metrics, sharding, train_state
from vit_jax.checkpoints import UNUSABLE_SUFFIX, CheckpointCorruptError, Checkpointer
from vit_jax.config import packed_max_grid, validate
from vit_jax.loading import init_from_pretrained
from vit_jax.logs import log
from vit_jax.models.flexi import patch_size_at
from vit_jax.paths import absolute, atomic_write
from vit_jax.preemption import preemption_requested, received_signal, stop_signals
from vit_jax.runlock import RunLock


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf: the run stops instead of saving garbage."""


def train_and_evaluate(config: mlc.ConfigDict, workdir: str | Path) -> dict:
    """Trains (or resumes) the run in ``workdir``; returns its final and best eval metrics."""
    workdir = absolute(workdir)

    # --- Config: every bad key or value fails here, before parameters or batches exist.
    info = validate(config)
    total_steps = config.total_steps
    pcount, pindex = jax.process_count(), jax.process_index()
    with contextlib.ExitStack() as cleanup:  # every exit path closes what was opened, in reverse
        # --- Workdir: this run's alone (a second one refuses), its checkpoints, its results.
        took_over = _claim(workdir, cleanup)
        results = _load_results(workdir)
        ckpt = Checkpointer(workdir, **config.checkpoint)
        cleanup.push(_closing(ckpt.close))  # a save in flight finishes (or fails) first
        if took_over:
            log(took_over)
        if _is_complete(ckpt, results, total_steps):  # nothing to build: say so at once
            _report_complete(results, workdir, total_steps)
            return results

        # --- Input pipeline: each process reads its own shard of every global batch.
        train_iter = data.build_train_iterator(
            config.data, batch_size=config.batch_size // pcount, seed=config.seed,
            process_index=pindex, process_count=pcount,
            max_grid=packed_max_grid(config, info.num_classes))
        cleanup.push(_closing(train_iter.close))  # stops grain's workers, frees batches

        # --- Model and optimizer, created already sharded (never whole on one device).
        mesh = sharding.make_mesh(config.mesh)
        graphdef, state, state_shardings = sharding.create_sharded_state(
            train_state.config_state_factory(config, info.num_classes), mesh)
        model, optimizer = nnx.merge(graphdef, state)

        # --- Checkpoints: a workdir with a usable checkpoint resumes from it.
        start_step, rng = _restore(ckpt, model, optimizer, train_iter, config)

        # --- Steps: jitted with the state's shardings, state buffers donated.
        graphdef, state = nnx.split((model, optimizer))
        step_fns: dict[int | None, Callable] = {}  # one compile per patch size (FlexiViT)

        def step_fn(step: int) -> Callable:
            patch = flexi_patch_size(config, step)
            if patch not in step_fns:
                step_fns[patch] = sharding.jit_train_step(train_state.train_step(
                    graphdef, train_state.optim_config(config), patch), state_shardings, mesh)
            return step_fns[patch]

        evals = evaluators.build(config)  # each opens its data once, for the whole run

        def evaluate(state, step: int | None = None) -> dict:
            """The evaluators due at ``step`` (all of them when None), metrics merged; with
            ``optim.ema_decay``, each again on the weight average (``<name>_ema/...``)."""
            due = {name: run for name, run in evals.items()
                   if step is None or step % evaluators.every_steps(config, name) == 0}
            if not due:  # most steps: no view, no swapped state
                return {}
            view = evaluators.ModelView(graphdef, state, mesh, state_shardings)
            ema_state = ema.with_ema_weights(state)
            ema_view = ema_state and evaluators.ModelView(graphdef, ema_state, mesh,
                                                          state_shardings)
            out = {}
            for name, run in due.items():
                out.update(run(view))
                if ema_view is not None:
                    out.update(ema.rename(run(ema_view), name))
            return out

        if start_step >= total_steps:  # complete, but its final eval was never recorded
            results["final"] = {"step": start_step, **evaluate(state)}
            _report_complete(results, workdir, total_steps)
            return results

        # --- Loop.
        log(_resume_message(ckpt, start_step, workdir))
        log(metrics.parameter_summary(model, workdir / metrics.PARAMETER_TABLE))
        log(f"Mesh {dict(mesh.shape)} over {jax.device_count()} {jax.default_backend()} "
            f"devices, {pcount} process(es)")
        writer = metrics.MetricWriter(str(workdir), resume_step=start_step)
        cleanup.push(_closing(writer.close))
        unit = "seq" if config.data.get("packing") else "img"  # packed rows hold several
        progress = metrics.ProgressReporter(total_steps, batch_size=config.batch_size,
                                            every_steps=config.log_every_steps, every_secs=30,
                                            first_step=start_step, unit=unit)
        log(f"Training {start_step} -> {total_steps} steps, batch {config.batch_size}"
            f"{' sequences' if unit == 'seq' else ''}, workdir {workdir}")

        def save(step: int, state, eval_metrics: dict | None, wait: bool) -> None:
            nnx.update((model, optimizer), state)
            ckpt.save(step, model=model, optimizer=optimizer, rng=rng,
                      data_state=train_iter.get_state(), config=config, metrics=eval_metrics,
                      wait=wait)

        pending = None  # the previous step's metrics, checked one step late (async dispatch)
        last_saved = start_step if ckpt.all_steps() else None
        t0 = time.time()
        with stop_signals():
            for step in range(start_step + 1, total_steps + 1):
                # No reference to the host batch outlives the step (its memory can be grain's).
                state, step_metrics = step_fn(step)(
                    state, sharding.shard_batch(next(train_iter), mesh), rng)
                if pending is not None:
                    _check_finite(*pending, last_saved, ckpt, config)
                pending = (step, step_metrics)
                ckpt.check_for_errors()  # a failed save stops the run now, in one line
                progress(step, loss=step_metrics["train/loss"], lr=step_metrics["train/lr"])
                if step % config.log_every_steps == 0:
                    writer.write_scalars(step, jax.device_get(step_metrics))
                try:
                    eval_metrics = evaluate(state, None if step == total_steps else step) or None
                except Exception:
                    _check_finite(*pending, last_saved, ckpt, config)
                    save(step, state, None, wait=True)  # an eval error never costs the step
                    raise
                if eval_metrics:
                    writer.write_scalars(step, eval_metrics)
                    log(f"step {step}: " + ", ".join(f"{k} {v:.4f}"
                                                     for k, v in eval_metrics.items()))
                    _update_best(results, step, eval_metrics, config.checkpoint.best_metric)
                    _save_results(results, workdir)
                writer.end_step()

                stop = preemption_requested(step)  # multi-process: JAX agrees on the step
                if step % config.checkpoint_every_steps == 0 or step == total_steps or stop:
                    _check_finite(*pending, last_saved, ckpt, config)  # never save a bad step
                    save(step, state, eval_metrics, wait=stop)
                    last_saved = step
                if stop:
                    why = "Interrupted" if received_signal() == signal.SIGINT else "Preempted"
                    log(f"{why}: saved step {step} to {ckpt.directory}; rerun to resume.")
                    return results
        ckpt.wait_until_finished()
        ckpt.check_for_errors()
        results["final"] = {"step": total_steps, **(eval_metrics or evaluate(state))}
        results["train_seconds"] = time.time() - t0
        _report(results, workdir, log)
        return results


def flexi_patch_size(config: mlc.ConfigDict, step: int) -> int | None:
    """The patch size of ``step`` in a FlexiViT run (``model.flexi_patch_sizes``), else None."""
    sizes = config.model.get("flexi_patch_sizes") or ()
    if not sizes:
        return None
    return patch_size_at(step, sizes, config.model.get("flexi_weights") or (), seed=config.seed)


def _claim(workdir: Path, cleanup: contextlib.ExitStack) -> str | None:
    """Creates the workdir and takes its lock (process 0); one-line errors for a path that is
    a file or cannot be written. Returns a line when a dead run's lock was taken over."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if jax.process_index() != 0:
            return None
        lock = RunLock(workdir)
        took_over = lock.acquire()
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"--workdir {workdir} (or a folder above it) is a file; give a "
                         "directory") from None
    except OSError as e:  # read-only filesystem, permissions
        raise ValueError(f"cannot write to --workdir {workdir}: {e.strerror or e}") from None
    cleanup.callback(lock.release)
    return took_over


def _closing(close):
    """An exit callback running ``close``; if the run is already failing, a failure to close
    (say, flushing logs to the full disk that broke it) does not hide the run's own error."""
    def exit_callback(exc_type, exc, tb) -> None:
        try:
            close()
        except Exception:
            if exc_type is None:
                raise
    return exit_callback


def _restore(ckpt: Checkpointer, model, optimizer, train_iter, config: mlc.ConfigDict):
    """(start step, rng): from the newest usable checkpoint, else the start (pretrained when
    ``init_from`` is set). Damaged steps are skipped with a line each."""
    rng = jax.random.PRNGKey(config.seed)
    try:
        restored = ckpt.restore_latest(model=model, optimizer=optimizer, rng=rng)
    except CheckpointCorruptError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"the checkpoint in {ckpt.directory} does not match this config (model or optimizer "
            f"changed?); use a new --workdir, or the config it was written with. "
            f"{' '.join(str(e).split())[:500]}") from None
    if restored is None:
        if config.init_from:  # transfer: a fresh run starts pretrained
            init_from_pretrained(model, config)
        return 0, rng
    for step, why in restored.skipped:
        log(f"Checkpoint step {step} in {ckpt.directory} is unusable ({why}); moved to "
            f"{step}{UNUSABLE_SUFFIX}, resuming from step {restored.step}")
    if restored.data_state:
        train_iter.set_state(restored.data_state)
    return restored.step, restored.rng


def _is_complete(ckpt: Checkpointer, results: dict, total_steps: int) -> bool:
    latest = ckpt.latest_step()
    final = results.get("final", {}).get("step")
    return latest is not None and latest >= total_steps and final == latest


def _report_complete(results: dict, workdir: Path, total_steps: int) -> None:
    log(f"Run already complete at step {results['final']['step']}/{total_steps} in {workdir}; "
        "nothing to train (use a new --workdir or raise --config.total_steps).")
    _report(results, workdir, log)


def _resume_message(ckpt: Checkpointer, start_step: int, workdir: Path) -> str:
    """What the run found in its workdir, so a rerun never silently starts over."""
    discarded = (f" (an interrupted save was discarded: {', '.join(ckpt.discarded)})"
                 if ckpt.discarded else "")
    if start_step:
        return f"Resuming from step {start_step} ({ckpt.directory}){discarded}"
    if discarded or (workdir / metrics.METRICS_FILE).exists():
        why = discarded or " (the earlier run stopped before its first save)"
        return f"No complete checkpoint in {ckpt.directory}{why}; starting from step 0"
    return f"Starting a new run in {workdir}"


def _check_finite(step: int, step_metrics: dict, last_saved: int | None, ckpt: Checkpointer,
                  config: mlc.ConfigDict) -> None:
    loss = float(step_metrics["train/loss"])
    grad_norm = float(step_metrics["train/grad_norm"])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        ckpt.wait_until_finished()
        kept = ("no checkpoint was saved yet" if last_saved is None else
                f"the last good checkpoint is step {last_saved} in {ckpt.directory}")
        fixes = ["a lower --config.optim.lr", "a longer --config.optim.warmup_steps"]
        if not config.optim.grad_clip_norm:
            fixes.insert(1, "--config.optim.grad_clip_norm=1.0")
        raise NonFiniteLossError(
            f"non-finite training loss at step {step} (loss={loss}, grad_norm={grad_norm}); "
            f"stopped without saving it; {kept}. Try {', '.join(fixes)}")


def _update_best(results: dict, step: int, eval_metrics: dict, best_metric: str) -> None:
    value = eval_metrics.get(best_metric)
    best = results.get("best")
    if value is not None and (best is None or value > best[best_metric]):
        results["best"] = {"step": step, **eval_metrics}


def _load_results(workdir: Path) -> dict:
    path = workdir / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_results(results: dict, workdir: Path) -> None:
    if jax.process_index() == 0:
        atomic_write(workdir / "results.json", json.dumps(results, indent=2))


def _report(results: dict, workdir: Path, log) -> None:
    _save_results(results, workdir)
    for name in ("best", "final"):
        if name in results:
            r = results[name]
            log(f"{name}: step {r['step']}, eval accuracy {r.get('eval/accuracy', np.nan):.4f}, "
                f"eval loss {r.get('eval/loss', np.nan):.4f}")
    log(f"Logs and checkpoints: {workdir}")
