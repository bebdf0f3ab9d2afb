"""An unlearning task: the model, the concept, D_f, D_r and held-out sets, and the one-pass gradients."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from razor.data import Manifest
from razor.errors import DataError, NumericalError
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
        axis, label = manifest.resolve_concept(concept)
        labels = manifest.labels()
        carries = manifest.carries(axis, label)

        def load(split: str, with_concept: bool, limit: int | None = None) -> Pairs:
            part = manifest.split(split).filter(lambda r: bool(carries(r)) == with_concept)
            if limit is not None:
                part = part.sample(limit, seed)
            return Pairs.load(part, adapter.preprocess, labels) if len(part) else None

        forget = load("train", True, forget_size)
        if forget is None:
            raise DataError(
                f"the forget set is empty: no train-split item carries {axis}:{label}; "
                "add training images of the concept to the manifest"
            )
        sets = dict(
            forget=forget, retain=load("train", False, retain_size),
            forget_val=load("val", True), retain_val=load("val", False, eval_size),
            forget_test=load("test", True), retain_test=load("test", False, eval_size),
        )
        empty = [k for k, v in sets.items() if v is None]
        if empty:
            raise DataError(f"no items for {', '.join(empty)} of {axis}:{label}; the manifest needs train, val and test items with and without the concept")
        return cls(adapter, axis, label, labels, manifest.prompts, batch_size=batch_size, manifest_path=manifest.path, **sets)

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
