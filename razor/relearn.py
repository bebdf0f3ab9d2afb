"""Relearning attacks (razor.attack): a short fine-tune of every weight on the task's retain
objective R, from retain data only or with a few forget images, the concept measured after it."""

from __future__ import annotations

from typing import Callable

import torch

from razor.config import AttackParams
from razor.memory import requires_grad_only


def relearn(task, p: AttackParams, steps: tuple[int, ...], measure: Callable, fixed: tuple[str, ...] = (),
            shots: int = 0) -> list[tuple[dict, float]]:
    """Adam on R over retain batches (with `shots` forget items and their captions in every batch),
    every weight but `fixed`; `measure(task)` after each of `steps`."""
    adapter = task.adapter
    params = {n: q for n, q in adapter.parameters().items() if n not in fixed}
    opt = torch.optim.Adam(params.values(), lr=p.lr)
    gen = torch.Generator().manual_seed(p.seed)
    held = task.forget.subset(torch.randperm(len(task.forget), generator=gen)[:shots]) if shots else None
    out = []
    for step in range(1, max(steps) + 1):
        batch = task.retain.subset(torch.randint(len(task.retain), (p.batch_size,), generator=gen))
        with requires_grad_only(adapter.model, set(params)):
            loss = task.retain_loss(batch if held is None else batch.join(held))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if step in steps:
            budget = dict(steps=step, lr=p.lr, batch=p.batch_size) | (dict(shots=shots) if shots else {})
            out.append((budget, measure(task)))
    return out


def relearn_attacks(measure: Callable, fixed: tuple[str, ...] = ()) -> dict[str, Callable]:
    """A family's relearning attacks, given its forget measure and the weights it never trains:
    `relearn_retain` (retain data only, no image or word of the concept; measured after each of
    `relearn_steps`) and `relearn_kshot` (retain data and `shots` forget images with their captions)."""

    def relearn_retain(task, p: AttackParams) -> list[tuple[dict, float]]:
        return relearn(task, p, tuple(sorted(set(p.relearn_steps))), measure, fixed)

    def relearn_kshot(task, p: AttackParams) -> list[tuple[dict, float]]:
        return relearn(task, p, (p.kshot_steps,), measure, fixed, shots=p.shots)

    return {"relearn_retain": relearn_retain, "relearn_kshot": relearn_kshot}
