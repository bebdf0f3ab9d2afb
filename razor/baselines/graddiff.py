"""GradDiff: ascend the forget objective on D_f while descending the retain loss on D_r."""

from razor.baselines.finetune import finetune, forget_term
from razor.config import TrainParams


def graddiff_edit(task, p: TrainParams, progress: bool = True):
    def loss(forget, retain):
        return -forget_term(task, forget) + p.retain_weight * task.retain_loss(retain)

    return finetune(task, p, loss, "graddiff", progress=progress)
