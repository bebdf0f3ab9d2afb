"""An unlearning task: the model, the concept, D_f, D_r and held-out sets, and the one-pass gradients."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from razor.curate import Curated, curate
from razor.data import Manifest
from razor.errors import NumericalError
from razor.pairs import Pairs


@dataclass
class Task:
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

    @classmethod
    def build(cls, adapter, manifest: Manifest, concept: str, forget_size: int = 256, retain_size: int = 512,
              eval_size: int = 600, seed: int = 0, batch_size: int = 128) -> "Task":
        """Curate the sets from one manifest (see razor.curate) and load them."""
        chosen = curate(manifest, concept, forget_size=forget_size, retain_size=retain_size, eval_size=eval_size, seed=seed)
        return cls.load(adapter, chosen, batch_size)

    @classmethod
    def load(cls, adapter, sets: Curated, batch_size: int = 128) -> "Task":
        """Load curated sets for `adapter`: pixels, captions and label ids."""
        labels = sets.forget.labels()
        carries = sets.eval.carries(sets.axis, sets.label)

        def pairs(m: Manifest) -> Pairs:
            return Pairs.load(m, adapter.preprocess, labels)

        def held(split: str, with_concept: bool) -> Pairs:
            return pairs(sets.eval.split(split).filter(lambda r: bool(carries(r)) == with_concept))

        return cls(adapter, sets.axis, sets.label, labels, sets.forget.prompts, pairs(sets.forget), pairs(sets.retain),
                   held("val", True), held("val", False), held("test", True), held("test", False),
                   batch_size=batch_size, manifest_path=sets.forget.path)

    @property
    def concept_prompt(self) -> str:
        return self.prompts[self.axis].format(self.label)

    @property
    def concept_id(self) -> int:
        return self.labels[self.axis].index(self.label)

    # -- one-pass gradients (METHOD.md §2) --------------------------------------------------
    def forget_gradient(self, names: list[str]) -> dict[str, torch.Tensor]:
        """g_f = ∇F over D_f."""
        concept = self.adapter.tokenize([self.concept_prompt])
        return self.gradient(names, self.forget, lambda b: self.adapter.forget_objective(b.pixels, concept))

    def retain_gradient(self, names: list[str]) -> dict[str, torch.Tensor]:
        """g_r = ∇R over D_r."""
        return self.gradient(names, self.retain, lambda b: self.adapter.retain_loss(
            b.pixels, self.adapter.tokenize(b.captions), b.positives()))

    def drift_gradient(self, names: list[str], frozen: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """∇M over D_r against the frozen similarity matrices of θ0 (one per batch)."""
        it = iter(frozen)
        return self.gradient(names, self.retain, lambda b: self.adapter.drift_penalty(
            b.pixels, self.adapter.tokenize(b.captions), next(it)))

    @torch.no_grad()
    def frozen_similarities(self) -> list[torch.Tensor]:
        """S_θ0 of each retain batch (cache before editing)."""
        a = self.adapter
        return [a.encode_images(b.pixels) @ a.encode_texts(a.tokenize(b.captions)).T for b in self.retain.batches(self.batch_size)]

    def gradient(self, names, pairs: Pairs, loss_fn) -> dict[str, torch.Tensor]:
        params = self.adapter.parameters()
        chosen = [params[n] for n in names]
        grads = [torch.zeros_like(p) for p in chosen]
        with requires_grad_only(self.adapter.model, set(names)):
            for batch in pairs.batches(self.batch_size):
                loss = loss_fn(batch) * (len(batch) / len(pairs))
                for acc, g in zip(grads, torch.autograd.grad(loss, chosen, allow_unused=True)):
                    if g is not None:
                        acc += g
        for n, g in zip(names, grads):
            if not torch.isfinite(g).all():
                raise NumericalError(
                    f"the gradient of {n} has NaN or Inf values; check the model weights and inputs for NaN/Inf "
                    "(or lower the precision risk by running in float32)"
                )
        return dict(zip(names, grads))


@contextlib.contextmanager
def requires_grad_only(model: torch.nn.Module, names: set[str]):
    """Within the block, only the named parameters require gradients (memory: no other grads)."""
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(before[n])
