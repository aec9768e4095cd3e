"""A sweep's training budget: every point at its configured steps, or all at equal FLOPs.

``budget.kind="steps"`` trains each point for its own ``total_steps``. ``budget.kind="flops"``
gives every point the training compute of ``budget.reference`` (a point's name) at its
configured steps: a point whose forward pass costs k times the reference's per image (XLA's
count, ``measure.forward_flops``) trains ``1/k`` as many steps of the same batch, its warmup
scaled alike. The steps a point gets are written into its delta (so its record and table say
so); a point's own delta for ``total_steps`` or ``optim.warmup_steps`` is kept as given.
"""

from __future__ import annotations

import copy
import dataclasses

import ml_collections as mlc

from vit_jax.config import validate
from vit_jax.sweep.points import Point

KINDS = ("steps", "flops")


def check_budget(sweep: mlc.ConfigDict) -> None:
    budget = sweep.get("budget") or {}
    kind = budget.get("kind", "steps")
    if kind not in KINDS:
        raise ValueError(f"sweep budget.kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "flops" and not budget.get("reference"):
        raise ValueError("sweep budget.kind='flops' needs budget.reference=<a point's name>, "
                         "whose configured steps set every point's compute")


def apply_budget(points: list[Point], sweep: mlc.ConfigDict,
                 flops_of=None) -> list[Point]:
    """``points`` with their steps set by the sweep's budget (see the module docstring).
    ``flops_of(config) -> forward FLOPs per image`` defaults to XLA's count."""
    check_budget(sweep)
    budget = sweep.get("budget") or {}
    if budget.get("kind", "steps") == "steps":
        return points
    if flops_of is None:
        flops_of = _forward_flops
    groups = {p.group or p.name: p for p in points if p.config is not None}
    reference = groups.get(budget.reference)
    if reference is None:
        raise ValueError(f"sweep budget.reference {budget.reference!r} is not a point; "
                         f"points: {', '.join(groups)}")
    cost: dict[str, float] = {}

    def flops(point: Point) -> float:
        key = point.group or point.name
        if key not in cost:
            cost[key] = float(flops_of(point.config))
        return cost[key]

    ref = reference.config
    total = flops(reference) * ref.batch_size * ref.total_steps
    out = []
    for p in points:
        if p.config is None or "total_steps" in p.delta:
            out.append(p)
            continue
        c = p.config
        steps = max(1, round(total / (flops(p) * c.batch_size)))
        delta = {**p.delta, "total_steps": steps}
        config = copy.deepcopy(c)
        config.total_steps = steps
        if "optim.warmup_steps" not in p.delta:
            warmup = round(c.optim.warmup_steps * steps / c.total_steps)
            delta["optim.warmup_steps"] = config.optim.warmup_steps = warmup
        out.append(dataclasses.replace(p, delta=delta, config=config))
    return out


def _forward_flops(config: mlc.ConfigDict) -> float:
    from vit_jax.sweep.measure import forward_flops

    info = validate(config)
    return forward_flops(config, info.num_classes, info.image_shape)
