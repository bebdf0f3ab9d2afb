"""Gradient ascent: maximise the training loss on the forget pairs."""

from razor.baselines.finetune import finetune, forget_pairs_loss
from razor.config import TrainParams


def ga_edit(task, p: TrainParams, progress: bool = True):
    return finetune(task, p, lambda forget, retain: -forget_pairs_loss(task, forget), "ga", progress=progress)
