"""The CLIP task: F, R and M (METHOD.md §6) on batches of image–caption pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from razor.pairs import Pairs
from razor.task import Task
from razor.templates import item_texts


@dataclass
class ClipTask(Task):
    """F: 1 − cos(image, concept label prompt) on forget images (objective `wordings`: averaged over
    the axis's forget wordings, each filled with the image's own labels on the other axes it names);
    R: InfoNCE on retain pairs;
    M: drift of the retain batch's image–text similarity matrix against θ0's (S_θ0)."""

    objectives: ClassVar[tuple[str, ...]] = ("wordings",)

    def forget_loss(self, batch: Pairs, axis: str, label: str) -> torch.Tensor:
        texts = self.wordings("forget", axis) if self.objective == "wordings" else [self.prompts[axis]]
        return self.adapter.forget_objective(batch.pixels, [item_texts(w, label, batch) for w in texts])

    def retain_loss(self, batch: Pairs) -> torch.Tensor:
        return self.adapter.retain_loss(batch.pixels, self.adapter.tokenize(batch.captions), batch.positives())

    def drift_loss(self, batch: Pairs, frozen: torch.Tensor) -> torch.Tensor:
        return self.adapter.drift_penalty(batch.pixels, self.adapter.tokenize(batch.captions), frozen)

    @torch.no_grad()
    def frozen_output(self, batch: Pairs) -> torch.Tensor:
        a = self.adapter
        return a.encode_images(batch.pixels) @ a.encode_texts(a.tokenize(batch.captions)).T
