"""The training job: ``train_and_evaluate(config, workdir)``, one readable function in stages.

Stages: validate the config, input pipeline, model and optimizer, checkpoint and resume, jitted
steps, then the loop (progress, periodic eval, checkpoints, preemption, NaN guard).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import ml_collections as mlc
import numpy as np
from flax import nnx

from vit_jax import data, evaluators, metrics, sharding, train_state
from vit_jax.checkpoints import Checkpointer
from vit_jax.config import validate
from vit_jax.loading import init_from_pretrained
from vit_jax.logs import log
from vit_jax.paths import absolute, atomic_write
from vit_jax.preemption import install_preemption_handler, preemption_requested


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf: the run stops instead of saving garbage."""


def train_and_evaluate(config: mlc.ConfigDict, workdir: str | Path) -> dict:
    """Trains (or resumes) the run in ``workdir``; returns its final and best eval metrics."""
    workdir = absolute(workdir)

    # --- Config: every bad key or value fails here, before parameters or batches exist.
    info = validate(config)
    workdir.mkdir(parents=True, exist_ok=True)
    total_steps = config.total_steps
    pcount, pindex = jax.process_count(), jax.process_index()
    results = _load_results(workdir)
    ckpt = Checkpointer(workdir, **config.checkpoint)
    if _is_complete(ckpt, results, total_steps):  # nothing to build: say so at once
        _report_complete(results, workdir, total_steps)
        ckpt.close()
        return results

    # --- Input pipeline: each process reads its own shard of every global batch.
    train_iter = data.build_train_iterator(
        config.data, batch_size=config.batch_size // pcount, seed=config.seed,
        process_index=pindex, process_count=pcount)

    # --- Model and optimizer, created already sharded over the mesh (never whole on a device).
    mesh = sharding.make_mesh(config.mesh)
    graphdef, state, state_shardings = sharding.create_sharded_state(
        train_state.config_state_factory(config, info.num_classes), mesh)
    model, optimizer = nnx.merge(graphdef, state)

    # --- Checkpoints: a workdir with a checkpoint resumes from it.
    if config.init_from and ckpt.latest_step() is None:  # transfer: a fresh run starts pretrained
        init_from_pretrained(model, config)
    rng = jax.random.PRNGKey(config.seed)
    start_step = 0
    try:
        restored = ckpt.restore_latest(model=model, optimizer=optimizer, rng=rng)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"the checkpoint in {ckpt.directory} does not match this config (model or optimizer "
            f"changed?); use a new --workdir, or the config it was written with. Orbax said: "
            f"{str(e)[:2000]}") from None
    if restored is not None:
        start_step, rng = restored.step, restored.rng
        if restored.data_state:
            train_iter.set_state(restored.data_state)

    # --- Steps: jitted with the state's shardings, state buffers donated.
    graphdef, state = nnx.split((model, optimizer))
    train_step = sharding.jit_train_step(
        train_state.train_step(graphdef, train_state.optim_config(config)), state_shardings, mesh)
    evals = evaluators.build(config)  # each opens its data once, for the whole run

    def evaluate(state, step: int | None = None) -> dict:
        """The evaluators due at ``step`` (all of them when None), metrics merged."""
        view = evaluators.ModelView(graphdef, state, mesh, state_shardings)
        return {k: v for name, run in evals.items()
                if step is None or step % evaluators.every_steps(config, name) == 0
                for k, v in run(view).items()}

    if start_step >= total_steps:  # complete, but its final eval was never recorded
        results["final"] = {"step": start_step, **evaluate(state)}
        _report_complete(results, workdir, total_steps)
        ckpt.close()
        return results

    # --- Loop.
    log(_resume_message(ckpt, start_step, workdir))
    install_preemption_handler()
    log(metrics.parameter_summary(model, workdir / metrics.PARAMETER_TABLE))
    log(f"Mesh {dict(mesh.shape)} over {jax.device_count()} {jax.default_backend()} devices, "
        f"{pcount} process(es)")
    writer = metrics.MetricWriter(str(workdir), resume_step=start_step)
    progress = metrics.ProgressReporter(total_steps, batch_size=config.batch_size,
                                        every_steps=config.log_every_steps, every_secs=30,
                                        first_step=start_step)
    log(f"Training {start_step} -> {total_steps} steps, batch {config.batch_size}, "
        f"workdir {workdir}")
    pending = None  # the previous step's metrics, checked one step late to keep dispatch async
    last_saved = start_step
    t0 = time.time()
    for step in range(start_step + 1, total_steps + 1):
        # No reference to the host batch outlives the step (its memory can be grain's).
        state, step_metrics = train_step(state, sharding.shard_batch(next(train_iter), mesh), rng)
        if pending is not None:
            _check_finite(*pending, last_saved, ckpt)
        pending = (step, step_metrics)
        progress(step, loss=step_metrics["train/loss"], lr=step_metrics["train/lr"])
        if step % config.log_every_steps == 0:
            writer.write_scalars(step, jax.device_get(step_metrics))

        eval_metrics = evaluate(state, None if step == total_steps else step) or None
        if eval_metrics:
            writer.write_scalars(step, eval_metrics)
            log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
            _update_best(results, step, eval_metrics, config.checkpoint.best_metric)
            _save_results(results, workdir)
        writer.end_step()

        preempted = preemption_requested(step)  # multi-process: JAX agrees on the step
        if step % config.checkpoint_every_steps == 0 or step == total_steps or preempted:
            _check_finite(*pending, last_saved, ckpt)  # never save after a bad step
            nnx.update((model, optimizer), state)
            ckpt.save(step, model=model, optimizer=optimizer, rng=rng,
                      data_state=train_iter.get_state(), config=config,
                      metrics=eval_metrics, wait=preempted)
            last_saved = step
        if preempted:
            log(f"Preempted: saved step {step} to {ckpt.directory}; rerun to resume.")
            break
    else:
        results["final"] = {"step": total_steps, **(eval_metrics or evaluate(state))}
        results["train_seconds"] = time.time() - t0
        _report(results, workdir, log)
    ckpt.wait_until_finished()
    ckpt.close()
    writer.close()
    train_iter.close()  # stops grain's workers and frees the batches they had prefetched
    return results


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


def _check_finite(step: int, step_metrics: dict, last_saved: int, ckpt: Checkpointer) -> None:
    loss = float(step_metrics["train/loss"])
    grad_norm = float(step_metrics["train/grad_norm"])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        ckpt.wait_until_finished()
        raise NonFiniteLossError(
            f"non-finite training loss at step {step} (loss={loss}, grad_norm={grad_norm}); "
            f"stopped without saving it. The last good checkpoint is step {last_saved} in "
            f"{ckpt.directory}. Try a lower --config.optim.lr, "
            "--config.optim.grad_clip_norm=1.0 or a longer warmup.")


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
