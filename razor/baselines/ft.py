"""Fine-tuning on the retain pairs alone (forgetting only by interference)."""

from razor.baselines.finetune import finetune
from razor.config import TrainParams


def ft_edit(task, p: TrainParams, progress: bool = True):
    a = task.adapter
    loss = lambda forget, retain: a.retain_loss(retain.pixels, a.tokenize(retain.captions), retain.positives())  # noqa: E731
    return finetune(task, p, loss, "ft", progress=progress)
