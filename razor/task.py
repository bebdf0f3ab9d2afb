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
    forgotten: tuple[str, ...] = ()  # axis:label the model already forgot (they must stay forgotten)
    kept_val: Pairs | None = None  # val items carrying one of them (and not this concept): the step search's check
    kept: Pairs | None = None  # training items carrying them (their forget objective)

    @classmethod
    def build(cls, adapter, manifest: Manifest, concept: str, forget_size: int = 256, retain_size: int = 512,
              eval_size: int = 600, seed: int = 0, batch_size: int = 128, forgotten: tuple[str, ...] = (),
              kept_size: int = 128) -> "Task":
        """Curate the sets from one manifest (see razor.curate) and load them."""
        chosen = curate(manifest, concept, forget_size=forget_size, retain_size=retain_size, eval_size=eval_size, seed=seed,
                        forgotten=forgotten, kept_size=kept_size)
        return cls.load(adapter, chosen, batch_size)

    @classmethod
    def load(cls, adapter, sets: Curated, batch_size: int = 128) -> "Task":
        """Load curated sets for `adapter`: pixels, captions and label ids."""
        labels = sets.forget.labels()
        carries = sets.eval.carries(sets.axis, sets.label)
        earlier = [tuple(c.split(":", 1)) for c in sets.forgotten]

        def kind(r) -> str:
            return "forget" if carries(r) else "kept" if any(r.get(a) == lab for a, lab in earlier) else "retain"

        def pairs(m: Manifest) -> Pairs:
            return Pairs.load(m, adapter.preprocess, labels)

        def held(split: str, which: str) -> Pairs:
            return pairs(sets.eval.split(split).filter(lambda r: kind(r) == which))

        kept = dict(kept_val=held("val", "kept"), kept=pairs(sets.kept)) if earlier else {}
        return cls(adapter, sets.axis, sets.label, labels, sets.forget.prompts, pairs(sets.forget), pairs(sets.retain),
                   held("val", "forget"), held("val", "retain"), held("test", "forget"), held("test", "retain"),
                   batch_size=batch_size, manifest_path=sets.forget.path, forgotten=tuple(sets.forgotten), **kept)

    @property
    def concept_prompt(self) -> str:
        return self.prompts[self.axis].format(self.label)

    @property
    def concept_id(self) -> int:
        return self.labels[self.axis].index(self.label)

    def kept_ids(self) -> list[tuple[str, int]]:
        """(axis, label id) of each concept the model already forgot."""
        return [(a, self.labels[a].index(lab)) for a, lab in (c.split(":", 1) for c in self.forgotten)]

    # -- one-pass gradients (METHOD.md §2) --------------------------------------------------
    def forget_gradient(self, names: list[str], kept_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """g_f = ∇F over D_f, plus kept_weight·∇F_k over the kept items of each concept k the model
        already forgot (so that this edit keeps pushing them away rather than undoing them)."""
        g = self._objective_gradient(names, self.forget, self.concept_prompt)
        if kept_weight > 0 and self.kept is not None:
            for axis, cid in self.kept_ids():
                has = (self.kept.label_ids[axis] == cid).nonzero().flatten()
                if len(has):
                    gk = self._objective_gradient(names, self.kept.subset(has), self.prompts[axis].format(self.labels[axis][cid]))
                    g = {n: g[n] + kept_weight * gk[n] for n in names}
        return g

    def _objective_gradient(self, names: list[str], pairs: Pairs, prompt: str) -> dict[str, torch.Tensor]:
        concept = self.adapter.tokenize([prompt])
        return self.gradient(names, pairs, lambda b: self.adapter.forget_objective(b.pixels, concept))

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
        return [a.encode_images(b.pixels) @ a.encode_texts(a.tokenize(b.captions)).T
                for b in self.retain.batches(self.batch_size)]

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
