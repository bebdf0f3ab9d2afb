"""A Stable Diffusion unlearning task: the curated sets as noised images with prompts.

Each item's prompt names its style and object ("a {style} {object}"); its anchor is the same
item without the concept (the other axis's label prompt, e.g. "a picture of a star" for a style).
  F (noise, default): ε_θ(x_t, t, prompt) pulled toward θ0's ε on the anchor, on forget items;
  F (embedding): the prompts' text states pulled from θ0's own toward θ0's states of the anchors;
  R: the ε-prediction loss on retain items with their captions;
  M: the drift of ε on retain items' captions (neutral to the concept) against θ0's.
Every item has one fixed (t, ε) draw, seeded by its id, so every loss is reproducible.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch

from razor.errors import DataError
from razor.families.sd.classifier import Classifier, classifier_for, judge_for
from razor.families.sd.metrics import AXES, PROMPT
from razor.pairs import Pairs
from razor.task import Task


@dataclass
class SdTask(Task):
    objective: str = "noise"
    objectives = ("noise", "embedding")
    classifier: Classifier | None = None  # labels the step search's probe images
    judge: Classifier | None = None  # labels the final metrics' and the gate's images
    anchor_eps: dict[str, torch.Tensor] = field(default_factory=dict)  # item id → θ0's ε on its anchor prompt
    states: dict[str, torch.Tensor] = field(default_factory=dict)  # prompt → θ0's text states

    @classmethod
    def load(cls, adapter, sets, batch_size: int = 128) -> "SdTask":
        labels = sets.forget.labels()
        if sets.axis not in AXES or any(a not in labels for a in AXES):
            raise DataError(f"a diffusion request forgets a style or an object of data labelled on both axes "
                            f"{' and '.join(AXES)}; this one asks for {sets.axis!r} of data labelled on "
                            f"{', '.join(labels)} (import UnlearnCanvas data with `razor data import --layout unlearncanvas`)")
        task = super().load(adapter, sets, batch_size)
        labels = {a: task.labels[a] for a in AXES}
        task.classifier = classifier_for(adapter.source, labels, task.prompts)
        task.judge = judge_for(adapter.source, labels, task.prompts, task.classifier)
        task.freeze()
        return task

    @torch.no_grad()
    def freeze(self) -> None:
        """θ0's anchor noise predictions and text states of every item a forget objective sees."""
        sets = [self.forget] + ([self.kept] if self.kept is not None else [])
        axes = [self.axis] + [a for a, _ in self.kept_ids()]
        for pairs in sets:
            for axis in dict.fromkeys(axes):
                for batch in pairs.batches(self.batch_size):
                    concept, anchor = self.prompts_of(batch, axis)
                    x_t, t, _ = self.noised(batch)
                    eps = self.adapter.predict(x_t, t, self.adapter.encode(anchor))
                    self.anchor_eps |= {f"{axis}/{i}": e for i, e in zip(batch.item_ids, eps)}
                    todo = [p for p in dict.fromkeys(concept + anchor) if p not in self.states]
                    if todo:
                        self.states |= dict(zip(todo, self.adapter.encode(todo)))

    def prompts_of(self, batch: Pairs, axis: str) -> tuple[list[str], list[str]]:
        """Each item's prompt naming its style and object, and its anchor without `axis`'s label."""
        other = AXES[1 - AXES.index(axis)]
        names = {a: [self.labels[a][int(i)] if i >= 0 else "" for i in batch.label_ids[a]] for a in AXES}
        concept = [PROMPT.format(style=s, object=o) for s, o in zip(names["styles"], names["objects"])]
        return concept, [self.prompts[other].format(x) for x in names[other]]

    def noised(self, batch: Pairs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = self.adapter
        return a.noised(a.to_latents(batch.pixels.to(a.device)), [zlib.crc32(i.encode()) for i in batch.item_ids])

    # -- the family's objectives on one batch (METHOD.md §6) -----------------------------------
    def forget_loss(self, batch: Pairs, axis: str, label: str) -> torch.Tensor:
        concept, anchor = self.prompts_of(batch, axis)
        if self.objective == "embedding":
            return self.adapter.forget_embedding(concept, torch.stack([self.states[p] for p in concept]),
                                                 torch.stack([self.states[p] for p in anchor]))
        x_t, t, _ = self.noised(batch)
        return self.adapter.forget_noise(x_t, t, concept, torch.stack([self.anchor_eps[f"{axis}/{i}"] for i in batch.item_ids]))

    def retain_loss(self, batch: Pairs) -> torch.Tensor:
        x_t, t, eps = self.noised(batch)
        return self.adapter.retain_loss(x_t, t, eps, batch.captions)

    def drift_loss(self, batch: Pairs, frozen: torch.Tensor) -> torch.Tensor:
        x_t, t, _ = self.noised(batch)
        return self.adapter.drift_penalty(x_t, t, batch.captions, frozen)

    @torch.no_grad()
    def frozen_output(self, batch: Pairs) -> torch.Tensor:
        x_t, t, _ = self.noised(batch)
        return self.adapter.predict(x_t, t, self.adapter.encode(batch.captions))
