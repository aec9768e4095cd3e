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

from vit_jax.paths import atomic_write
from vit_jax.tree import flatten


def _is_main() -> bool:  # only process 0 writes files or prints
    return jax.process_index() == 0


def _scalar(value: Any) -> float:
    return float(np.asarray(value))


METRICS_FILE = "metrics.jsonl"
PARAMETER_TABLE = "parameters.txt"


class MetricWriter:
    """TensorBoard event files + `metrics.jsonl` in `workdir` (no-op off process 0).

    Scalars written for the same step are buffered and emitted as one JSON line by
    `end_step()`, when a new step starts, or on `flush()`/`close()`. A run resumed from step N
    (``resume_step``; 0 for a restart in a workdir without a checkpoint) first drops what the
    interrupted run wrote after N (those steps are trained again): `metrics.jsonl` keeps each
    step once, and TensorBoard is told to purge its events past N, so it shows one curve.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True,
                 resume_step: int | None = None):
        self.enabled = _is_main()
        self._tb = None
        self._file = None
        self._step: int | None = None
        self._pending: dict[str, float] = {}
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.jsonl_path = os.path.join(workdir, METRICS_FILE)
        had_events = any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
        if resume_step is not None and os.path.exists(self.jsonl_path):
            _truncate_jsonl(self.jsonl_path, resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter  # Lazy: only process 0 needs it.

            # purge_step: TensorBoard discards the older files' events from this step on.
            purge = resume_step + 1 if had_events and resume_step is not None else None
            self._tb = SummaryWriter(logdir=workdir, purge_step=purge)
        self._file = open(self.jsonl_path, "a")  # noqa: SIM115 (closed in close())

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Records `scalars` (floats or 0-d arrays; fetched to host here) at `step`."""
        if not self.enabled:
            return
        step = int(step)
        if self._step is not None and step != self._step:
            self.end_step()
        self._step = step
        values = {k: _scalar(v) for k, v in scalars.items()}
        self._pending.update(values)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, global_step=step)

    def end_step(self) -> None:
        """Writes the buffered step's JSON line now (a killed run keeps every finished step)."""
        if self._pending and self._file is not None:
            self._file.write(json.dumps({"step": self._step, **self._pending}) + "\n")
            self._file.flush()
        self._pending = {}

    def flush(self) -> None:
        """Writes the buffered step and flushes TensorBoard."""
        if not self.enabled:
            return
        self.end_step()
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


def _truncate_jsonl(path: str, last_step: int) -> None:
    """Keeps the lines of steps <= ``last_step`` (a crash leaves the old or the new file)."""
    with open(path) as f:
        lines = f.readlines()
    keep = [line for line in lines if line.strip() and _line_step(line) <= last_step]
    if len(keep) == len(lines):
        return
    atomic_write(path, "".join(keep))


def _line_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a line cut by a crash: drop it
        return float("inf")


def format_duration(seconds: float) -> str:
    """``3725.4`` -> ``1:02:05`` (progress lines and sweep ETAs)."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class ProgressReporter:
    """Prints one progress line every `every_steps` steps or `every_secs` seconds.

    The loss is only fetched from the device when a line is printed, so calling this every
    step does not stall JAX's asynchronous dispatch. Throughput and ETA use the interval
    since the previous line, and the clock starts after the first step (which carries the
    compilation), so the first ETA is not inflated by it. ``unit``: what a batch row is
    (``img``; ``seq`` for packed batches, whose rows are sequences of several images).
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
        unit: str = "img",
    ):
        self.total_steps, self.batch_size, self.unit = total_steps, batch_size, unit
        self.every_steps, self.every_secs = every_steps, every_secs
        self.print_fn = print_fn
        self._start = self._last_time = self._rate_time = time.monotonic()
        self._last_step = first_step
        self._rate_step: int | None = None  # set by the first call: the rate starts there

    def __call__(
        self, step: int, *, loss: Any = None, lr: Any = None, force: bool = False
    ) -> str | None:
        """Reports progress after finishing `step`; returns the printed line (or None)."""
        now = time.monotonic()
        if self._rate_step is None:  # the first step's call returns after compiling it
            self._rate_step, self._rate_time = step, now
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
        if step > self._rate_step:
            steps_per_sec = (step - self._rate_step) / max(now - self._rate_time, 1e-9)
            eta = format_duration((self.total_steps - step) / steps_per_sec)
            parts.append(f"{steps_per_sec * self.batch_size:.1f} {self.unit}/s")
        else:  # only the compiling step so far: no rate to tell yet
            eta = "?"
        parts += [f"elapsed {format_duration(now - self._start)}", f"ETA {eta}"]
        line = " | ".join(parts)
        self._last_step, self._last_time = step, now
        self._rate_step, self._rate_time = step, now
        if _is_main():
            self.print_fn(line)
        return line


# ---------------------------------------------------------------------- eval metrics


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    """Mean cross-entropy, top-1 and top-5 accuracy over the real (mask=1) examples (top-5 is
    top-min(5, classes): 1.0 with 5 classes or fewer; ties broken by class id, as argmax)."""

    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy
    top5: clu_metrics.Average.from_output("top5")


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
    labels = labels.astype(jnp.int32)
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    # Classes ranked above the true one; a tie ranks the lower class id first, as argmax (top-1)
    # and lax.top_k break ties, so equal logits (a zero-initialised head) are not all "top 5".
    lower_id = jnp.arange(logits.shape[-1]) < labels[:, None]
    above = ((logits > label_logit) | ((logits == label_logit) & lower_id)).sum(-1)
    top5 = (above < min(5, logits.shape[-1])).astype(jnp.float32)
    return EvalMetrics.single_from_model_output(
        loss=loss, logits=logits, labels=labels, mask=mask, top5=top5
    )


def compute_eval_metrics(metrics: EvalMetrics, prefix: str = "eval/") -> dict[str, float]:
    """{'eval/loss': ..., 'eval/accuracy': ...} as Python floats, ready for a writer."""
    return {f"{prefix}{k}": _scalar(v) for k, v in metrics.compute().items()}


# ---------------------------------------------------------------------- parameter table


def _group(parts: list[str]) -> tuple[str, str | None]:
    """(up to two leading module names, the list index after them if any) of a param path."""
    prefix = []
    for part in parts[:-1]:
        if part.isdigit():
            return "/".join(prefix), part
        if len(prefix) == 2:
            break
        prefix.append(part)
    return "/".join(prefix) or parts[0], None


def parameter_summary(model: nnx.Module, table_path: str | os.PathLike | None = None) -> str:
    """A few lines a person reads at the start of a run: the total, then parameters per group
    (top-level module, or its second level: ``encoder/blocks`` with the block count).

    The full per-array table (clu's ``parameter_overview``) is written to ``table_path``
    (process 0) instead of the terminal: 100+ lines for a 6-layer model.
    """
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    flat = flatten(params)
    sizes: dict[str, int] = {}
    blocks: dict[str, set[str]] = {}
    for name, array in sorted(flat.items()):
        group, index = _group(name.split("/"))
        sizes[group] = sizes.get(group, 0) + int(np.prod(array.shape))
        if index is not None:
            blocks.setdefault(group, set()).add(index)
    total = sum(sizes.values())
    nbytes = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in flat.values())
    where = ""
    if table_path is not None:
        if _is_main():
            table = parameter_overview.get_parameter_overview(params, include_stats=False)
            with open(table_path, "w") as f:
                f.write(table + "\n")
        where = f"; every array in {table_path}"
    width = max(len(g) for g in sizes)
    lines = [f"Parameters: {total:,} in {len(flat)} arrays ({nbytes / 2**20:.1f} MiB){where}"]
    for group, size in sizes.items():
        n = len(blocks.get(group, ()))
        each = f"  ({n} x {size // n:,})" if n > 1 else ""
        lines.append(f"  {group:<{width}}  {size:>13,}{each}")
    return "\n".join(lines)
