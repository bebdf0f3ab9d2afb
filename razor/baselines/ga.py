"""Gradient ascent: maximise the forget objective F (1 − cos to the concept text) on D_f."""

from razor.baselines.finetune import finetune, forget_term
from razor.config import TrainParams


def ga_edit(task, p: TrainParams, progress: bool = True):
    return finetune(task, p, lambda forget, retain: -forget_term(task, forget), "ga", progress=progress)
