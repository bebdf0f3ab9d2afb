"""The loop the gradient-based baselines share: Adam on every weight, early-stopped once the
forget-val FA@1 meets the target. Each baseline supplies only its loss (and SalUn a mask)."""

from __future__ import annotations

import itertools

import torch
from tqdm import tqdm

from razor.config import TrainParams
from razor.delta import Delta
from razor.editing import EditResult
from razor.families import of
from razor.memory import checkpointed, requires_grad_only


def forget_term(task, batch) -> torch.Tensor:
    """F on a batch of forget images: the family's forget objective (for CLIP bounded, unlike InfoNCE ascent)."""
    return task.forget_loss(batch, task.axis, task.label)


def finetune(task, p: TrainParams, loss_fn, method: str, mask: dict | None = None, progress: bool = True) -> EditResult:
    """Minimise loss_fn(step, forget_batch, retain_batch); stop when the forget target is met."""
    adapter = task.adapter
    params = {n: q for n, q in adapter.parameters().items() if n not in of(adapter).fixed}
    base = {n: q.detach().clone() for n, q in params.items()}
    opt = torch.optim.Adam(params.values(), lr=p.lr)
    probe = of(task.adapter).probe(task)
    gen = torch.Generator().manual_seed(0)
    forget_batches = itertools.cycle(list(task.forget.batches(task.batch_size)))
    log = []
    bar = tqdm(range(1, p.max_steps + 1), desc=method, disable=not progress, leave=False)
    with requires_grad_only(adapter.model, set(params)), checkpointed(adapter.blocks() if task.checkpointing else []):
        for step in bar:
            idx = torch.randint(len(task.retain), (task.batch_size,), generator=gen)
            loss = loss_fn(next(forget_batches), task.retain.subset(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if mask is not None:
                for n, m in mask.items():
                    params[n].grad.mul_(m)
            opt.step()
            if step % p.eval_every == 0 or step == p.max_steps:
                m = probe.refresh()
                log.append(dict(step=step, loss=loss.item(), fa_val=m.fa, retain_val=m.retain))
                bar.set_postfix(fa=f"{m.fa:.2f}", retain=f"{m.retain:.3f}")
                if m.fa <= p.forget_target:
                    break
    delta = Delta.from_diff(base, params, meta=dict(method=method, components=[], base=adapter.source),
                            layout=adapter.layout)
    delta.meta["components"] = delta.params
    return EditResult(delta, log)
