"""GradDiff: ascend the forget objective on D_f while descending the retain loss on D_r."""

from razor.baselines.finetune import finetune, forget_term
from razor.config import TrainParams


def graddiff_edit(task, p: TrainParams, progress: bool = True):
    a = task.adapter

    def loss(forget, retain):
        keep = a.retain_loss(retain.pixels, a.tokenize(retain.captions), retain.positives())
        return -forget_term(task, forget) + p.retain_weight * keep

    return finetune(task, p, loss, "graddiff", progress=progress)
