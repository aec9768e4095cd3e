"""Writing and showing metrics: TensorBoard + metrics.jsonl, a progress line, eval metrics.

Only process 0 writes or prints, so a multi-host run produces one copy of everything.
`metrics.jsonl` holds one JSON object per step (train and eval scalars of the same step are
merged), which `pandas.read_json(path, lines=True)` loads as a table without TensorBoard.
"""

# No `from __future__ import annotations` here: clu reads a Collection's metric classes
# from `__annotations__`, which would then be strings.
import datetime
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics as clu_metrics
from clu import parameter_overview
from flax import nnx


def _is_main() -> bool:
    return jax.process_index() == 0


def _scalar(value: Any) -> float:
    return float(np.asarray(value))


class MetricWriter:
    """TensorBoard event files + `metrics.jsonl` in `workdir` (no-op off process 0).

    Scalars written for the same step are buffered and emitted as one JSON line when a new
    step starts or on `flush()`/`close()`. The file is appended to, so a resumed run
    continues it.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = _is_main()
        self._tb = None
        self._file = None
        self._step: int | None = None
        self._pending: dict[str, float] = {}
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if tensorboard:
            from tensorboardX import SummaryWriter  # Lazy: only process 0 needs it.

            self._tb = SummaryWriter(logdir=workdir)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.jsonl_path, "a")  # noqa: SIM115 (closed in close())

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Records `scalars` (floats or 0-d arrays; fetched to host here) at `step`."""
        if not self.enabled:
            return
        step = int(step)
        if self._step is not None and step != self._step:
            self._emit()
        self._step = step
        values = {k: _scalar(v) for k, v in scalars.items()}
        self._pending.update(values)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, global_step=step)

    def _emit(self) -> None:
        if self._pending and self._file is not None:
            self._file.write(json.dumps({"step": self._step, **self._pending}) + "\n")
            self._file.flush()
        self._pending = {}

    def flush(self) -> None:
        """Writes the buffered step and flushes TensorBoard."""
        if not self.enabled:
            return
        self._emit()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes both outputs."""
        if not self.enabled:
            return
        self.flush()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hms(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class ProgressReporter:
    """Prints one progress line every `every_steps` steps or `every_secs` seconds.

    The loss is only fetched from the device when a line is printed, so calling this every
    step does not stall JAX's asynchronous dispatch. Throughput and ETA use the interval
    since the previous line, so compilation time of the first step does not skew the ETA.
    """

    def __init__(
        self,
        total_steps: int,
        *,
        batch_size: int,
        every_steps: int | None = None,
        every_secs: float | None = 60.0,
        first_step: int = 0,
        print_fn: Callable[[str], None] = print,
    ):
        self.total_steps, self.batch_size = total_steps, batch_size
        self.every_steps, self.every_secs = every_steps, every_secs
        self.print_fn = print_fn
        self._start = self._last_time = time.monotonic()
        self._last_step = first_step

    def __call__(
        self, step: int, *, loss: Any = None, lr: Any = None, force: bool = False
    ) -> str | None:
        """Reports progress after finishing `step`; returns the printed line (or None)."""
        now = time.monotonic()
        due = force or step >= self.total_steps
        if self.every_steps and step - self._last_step >= self.every_steps:
            due = True
        if self.every_secs is not None and now - self._last_time >= self.every_secs:
            due = True
        if not due or step <= self._last_step:
            return None
        parts = [f"step {step}/{self.total_steps} ({100.0 * step / self.total_steps:.1f}%)"]
        if loss is not None:
            parts.append(f"loss {_scalar(loss):.4f}")
        if lr is not None:
            parts.append(f"lr {_scalar(lr):.3e}")
        now = time.monotonic()  # After fetching the loss: the interval includes the compute.
        steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
        eta = (self.total_steps - step) / steps_per_sec
        parts += [
            f"{steps_per_sec * self.batch_size:.1f} img/s",
            f"elapsed {_hms(now - self._start)}",
            f"ETA {_hms(eta)}",
        ]
        line = " | ".join(parts)
        self._last_step, self._last_time = step, now
        if _is_main():
            self.print_fn(line)
        return line


# ---------------------------------------------------------------------- eval metrics


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    """Mean cross-entropy and top-1 accuracy over the real (mask=1) examples."""

    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy


def eval_batch_metrics(
    logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> EvalMetrics:
    """Metrics of one eval batch; jit-able. Merge batches with `.merge`, read `.compute()`.

    `labels` are class ids (B,) or one-hot/soft targets (B, C). `mask` (B,) is 0 for the
    padding examples that fill the last batch to a fixed shape: they must not count.
    """
    if labels.ndim == logits.ndim:  # one-hot / soft targets
        loss = optax.softmax_cross_entropy(logits, labels)
        labels = jnp.argmax(labels, axis=-1)
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if mask is None:
        mask = jnp.ones(labels.shape[0], bool)
    return EvalMetrics.single_from_model_output(
        loss=loss, logits=logits, labels=labels.astype(jnp.int32), mask=mask
    )


def compute_eval_metrics(metrics: EvalMetrics, prefix: str = "eval/") -> dict[str, float]:
    """{'eval/loss': ..., 'eval/accuracy': ...} as Python floats, ready for a writer."""
    return {f"{prefix}{k}": _scalar(v) for k, v in metrics.compute().items()}


# ---------------------------------------------------------------------- parameter table


def log_parameter_overview(
    model: nnx.Module, *, include_stats: bool = False, print_fn: Callable[[str], None] = print
) -> str:
    """Prints the table of parameter names/shapes/sizes and the total (process 0); returns it.

    Stats (mean/std) are off by default: they cost a device pass over every parameter.
    """
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    table = parameter_overview.get_parameter_overview(params, include_stats=include_stats)
    if _is_main():
        print_fn(table)
    return table
