"""An unlearning task: the model, the concept, D_f, D_r and held-out sets, and the one-pass gradients.

What is common to every family lives here; each family's task (`razor/families/<name>/task.py`)
gives its F, R and M on one batch (METHOD.md §6) and θ0's output that M compares against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from razor.curate import Curated, curate
from razor.data import Manifest, concept_parts
from razor.errors import NumericalError, RazorError
from razor.memory import checkpointed, requires_grad_only
from razor.pairs import Pairs
from razor.templates import wordings


@dataclass
class Task(ABC):
    """Everything a method needs to forget `axis:label` from `adapter`'s model."""

    adapter: object
    axis: str
    label: str
    labels: dict[str, list[str]]
    prompts: dict[str, str]
    forget: Pairs  # D_f: training items that carry the concept
    retain: Pairs  # D_r: a seeded sample of training items that do not
    forget_val: Pairs
    retain_val: Pairs
    forget_test: Pairs
    retain_test: Pairs
    batch_size: int = 128
    manifest_path: Path | None = None
    forgotten: tuple[str, ...] = ()  # axis:label the model already forgot (they must stay forgotten)
    kept_val: Pairs | None = None  # val items carrying one of them (and not this concept): the step search's check
    kept: Pairs | None = None  # training items carrying them (their forget objective)
    objective: str = "default"  # the forget objective F where a family offers several (SD: noise | embedding)
    checkpointing: bool = False  # recompute block activations in the backward pass (memory for time)
    templates: dict = field(default_factory=dict)  # axis → forget / heldout wordings (razor.templates)

    @classmethod
    def build(cls, adapter, manifest: Manifest, concept: str, forget_size: int = 256, retain_size: int = 512,
              eval_size: int = 600, seed: int = 0, batch_size: int = 128, forgotten: tuple[str, ...] = (),
              kept_size: int = 128) -> "Task":
        """Curate the sets from one manifest (see razor.curate) and load them."""
        chosen = curate(manifest, concept, forget_size=forget_size, retain_size=retain_size, eval_size=eval_size, seed=seed,
                        forgotten=forgotten, kept_size=kept_size)
        return cls.load(adapter, chosen, batch_size)

    multi_label = False  # whether one request may forget several labels of an axis ("a+b")
    objectives: ClassVar[tuple[str, ...]] = ()  # the forget objectives a family offers beyond its default

    def use_objective(self, name: str) -> None:
        """Forget with the objective `name` from here on ("default": the family's own)."""
        if name != "default" and name not in self.objectives:
            raise RazorError(f"forget_objective {name!r} is not offered for {self.adapter.family} models "
                              f"(they offer: default{''.join(', ' + o for o in self.objectives)})")
        if name != "default":
            self.objective = name

    @classmethod
    def load(cls, adapter, sets: Curated, batch_size: int = 128) -> "Task":
        """Load curated sets for `adapter`: pixels, captions and label ids."""
        labels = sets.forget.labels()
        if sets.label not in labels[sets.axis] and not cls.multi_label:
            raise RazorError(f"{adapter.family} requests forget one label at a time, not {sets.label!r}; "
                             "send one request per label")
        carries = sets.eval.carries(sets.axis, sets.label)
        earlier = [part for c in sets.forgotten for part in concept_parts(c, labels)]

        def kind(r) -> str:
            return "forget" if carries(r) else "kept" if any(r.get(a) == lab for a, lab in earlier) else "retain"

        def pairs(m: Manifest) -> Pairs:
            return Pairs.load(m, adapter.preprocess, labels)

        def held(split: str, which: str) -> Pairs:
            return pairs(sets.eval.split(split).filter(lambda r: kind(r) == which))

        kept = dict(kept_val=held("val", "kept"), kept=pairs(sets.kept)) if earlier else {}
        return cls(adapter, sets.axis, sets.label, labels, sets.forget.prompts, pairs(sets.forget), pairs(sets.retain),
                   held("val", "forget"), held("val", "retain"), held("test", "forget"), held("test", "retain"),
                   batch_size=batch_size, manifest_path=sets.forget.path, forgotten=tuple(sets.forgotten), templates=sets.forget.templates, **kept)

    @property
    def concept_prompt(self) -> str:
        return self.prompts[self.axis].format(self.label)

    @property
    def concept_id(self) -> int:
        return self.labels[self.axis].index(self.label)

    def wordings(self, kind: str, axis: str | None = None) -> list[str]:
        """The wordings of `axis` (default: the concept's) that F optimises over (forget) or that only
        the final metrics use (heldout)."""
        return wordings(self.templates, self.prompts, axis or self.axis, kind)

    def kept_ids(self) -> list[tuple[str, int]]:
        """(axis, label id) of each concept the model already forgot."""
        return [(a, self.labels[a].index(lab)) for c in self.forgotten for a, lab in concept_parts(c, self.labels)]

    # -- the family's objectives on one batch (METHOD.md §6) ---------------------------------
    @abstractmethod
    def forget_loss(self, batch: Pairs, axis: str, label: str) -> torch.Tensor:
        """F on a batch of items carrying `axis:label`."""

    @abstractmethod
    def retain_loss(self, batch: Pairs) -> torch.Tensor:
        """R on a batch of retain items."""

    @abstractmethod
    def drift_loss(self, batch: Pairs, frozen: torch.Tensor) -> torch.Tensor:
        """M on a retain batch against θ0's output on it."""

    @abstractmethod
    def frozen_output(self, batch: Pairs) -> torch.Tensor:
        """θ0's output on a retain batch that M compares against."""

    # -- one-pass gradients (METHOD.md §2) --------------------------------------------------
    def forget_gradient(self, names: list[str], kept_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """g_f = ∇F over D_f, plus kept_weight·∇F_k over the kept items of each concept k the model
        already forgot (so that this edit keeps pushing them away rather than undoing them)."""
        g = self.gradient(names, self.forget, lambda b: self.forget_loss(b, self.axis, self.label))
        if kept_weight > 0 and self.kept is not None:
            for axis, cid in self.kept_ids():
                has = (self.kept.label_ids[axis] == cid).nonzero().flatten()
                if len(has):
                    label = self.labels[axis][cid]
                    gk = self.gradient(names, self.kept.subset(has), lambda b: self.forget_loss(b, axis, label))
                    g = {n: g[n] + kept_weight * gk[n] for n in names}
        return g

    def retain_gradient(self, names: list[str]) -> dict[str, torch.Tensor]:
        """g_r = ∇R over D_r."""
        return self.gradient(names, self.retain, self.retain_loss)

    def drift_gradient(self, names: list[str], frozen: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """∇M over D_r against θ0's outputs (one per batch)."""
        it = iter(frozen)
        return self.gradient(names, self.retain, lambda b: self.drift_loss(b, next(it)))

    def frozen_outputs(self) -> list[torch.Tensor]:
        """θ0's output on each retain batch (cache before editing)."""
        return [self.frozen_output(b) for b in self.retain.batches(self.batch_size)]

    def gradient(self, names, pairs: Pairs, loss_fn) -> dict[str, torch.Tensor]:
        """∇ of the set's mean loss for the named parameters, accumulated batch by batch in place
        (only they require gradients; with `checkpointing` the blocks recompute their activations)."""
        params = self.adapter.parameters()
        chosen = [params[n] for n in names]
        blocks = self.adapter.blocks() if self.checkpointing else []
        for p in chosen:
            p.grad = None
        with requires_grad_only(self.adapter.model, set(names)), checkpointed(blocks):
            for batch in pairs.batches(self.batch_size):
                loss = loss_fn(batch) * (len(batch) / len(pairs))
                if loss.requires_grad:
                    loss.backward()
        grads = {}
        for n, p in zip(names, chosen):
            g, p.grad = (p.grad if p.grad is not None else torch.zeros_like(p)), None
            if not torch.isfinite(g).all():
                raise NumericalError(
                    f"the gradient of {n} has NaN or Inf values; check the model weights and inputs for NaN/Inf "
                    "(or lower the precision risk by running in float32)"
                )
            grads[n] = g
        return grads
