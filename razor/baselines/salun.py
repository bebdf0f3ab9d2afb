"""SalUn (Fan et al., ICLR 2024): a weight-saliency mask from the forget gradient, then random
relabelling of the forget images (each paired with the prompt of a random other label of the
concept's axis) plus the retain loss, updating only the salient weights."""

from __future__ import annotations

import torch

from razor.baselines.finetune import finetune
from razor.config import TrainParams


def saliency_mask(task, share: float) -> dict[str, torch.Tensor]:
    """1 on the `share` of each weight matrix with the largest |∇ forget loss|, else 0."""
    a = task.adapter
    names = [n for n, q in a.parameters().items() if q.ndim >= 2]
    grads = task.gradient(names, task.forget, lambda b: task.forget_loss(b, task.axis, task.label))
    mask = {}
    for n, g in grads.items():
        k = max(1, int(g.numel() * share))
        cut = g.abs().flatten().kthvalue(g.numel() - k + 1).values
        mask[n] = (g.abs() >= cut).to(g.dtype)
    return mask


def salun_edit(task, p: TrainParams, progress: bool = True):
    a = task.adapter
    gen = torch.Generator().manual_seed(1)

    others = [lab for lab in task.labels[task.axis] if lab != task.label]

    def loss(forget, retain):
        pick = torch.randint(len(others), (len(forget),), generator=gen)
        relabelled = [task.prompts[task.axis].format(others[i]) for i in pick.tolist()]
        wrong = a.retain_loss(forget.pixels, a.tokenize(relabelled), torch.eye(len(forget), dtype=torch.bool))
        keep = task.retain_loss(retain)
        return wrong + p.retain_weight * keep

    return finetune(task, p, loss, "salun", mask=saliency_mask(task, p.saliency), progress=progress)
