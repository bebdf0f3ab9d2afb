"""GradDiff: ascend the training loss on forget pairs while descending it on retain pairs."""

from razor.baselines.finetune import finetune, forget_pairs_loss
from razor.config import TrainParams


def graddiff_loss(task, p: TrainParams):
    a = task.adapter

    def loss(forget, retain):
        keep = a.retain_loss(retain.pixels, a.tokenize(retain.captions), retain.positives())
        return -forget_pairs_loss(task, forget) + p.retain_weight * keep

    return loss


def graddiff_edit(task, p: TrainParams, progress: bool = True):
    return finetune(task, p, graddiff_loss(task, p), "graddiff", progress=progress)
