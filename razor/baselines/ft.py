"""Fine-tuning on the retain pairs alone (forgetting only by interference)."""

from razor.baselines.finetune import finetune
from razor.config import TrainParams


def ft_edit(task, p: TrainParams, progress: bool = True):
    return finetune(task, p, lambda forget, retain: task.retain_loss(retain), "ft", progress=progress)
