"""Fast validation measurements for the step search.

Image hidden states entering every vision block are cached for the current model; a probe of
a vision component re-runs only the blocks from its layer on, and a text component re-uses
the cached image embeddings outright.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from razor.components import Component
from razor.quantize import quantized
from razor.zeroshot import label_embeddings


@dataclass(frozen=True)
class Measure:
    fa: float  # FA@1 on the forget-val items
    concept_p: float  # mean zero-shot probability of the concept on them (a smooth FA)
    retain: float  # share of retain-val (item, axis) top-1 predictions unchanged from θ0
    accuracy: float  # mean per-axis zero-shot accuracy on the retain-val items


class Probe:
    """Validation metrics of the current model, re-running only what an edit can change."""

    def __init__(self, task):
        self.task = task
        self.pixels = torch.cat([task.forget_val.pixels, task.retain_val.pixels])
        self.n_forget = len(task.forget_val)
        self.reference = None
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> Measure:
        """Re-cache hidden states after the model changed; returns the current measure."""
        a = self.task.adapter
        self.hidden = [torch.cat(h) for h in zip(*(a.vision_inputs(b) for b in self.pixels.split(256)))]
        self.images = self._images_from(0)
        self.current = self.measure()
        self._quantized_fa = {}
        return self.current

    def met(self, p) -> bool:
        """Whether the current model meets the forget target, after `p.robust_bits` quantisation too."""
        if self.current.fa > p.forget_target:
            return False
        if p.robust_bits and p.robust_bits not in self._quantized_fa:
            self._quantized_fa[p.robust_bits] = self.measure_quantized(p.robust_bits).fa
        return not p.robust_bits or self._quantized_fa[p.robust_bits] <= p.forget_target

    def _images_from(self, layer: int) -> torch.Tensor:
        a = self.task.adapter
        return torch.cat([a.encode_images_from(layer, h) for h in self.hidden[layer].split(256)])

    @torch.no_grad()
    def measure(self, component: Component | None = None) -> Measure:
        """Measure the model as it is now; `component` says which part changed since refresh()."""
        changed_vision = component is not None and component.tower == "vision"
        return self._score(self._images_from(component.layer) if changed_vision else self.images)

    @torch.no_grad()
    def measure_quantized(self, bits: int) -> Measure:
        """Measure the model with its weights quantised to `bits` (a full forward)."""
        a = self.task.adapter
        with quantized(a.model, bits):
            return self._score(torch.cat([a.encode_images(b) for b in self.pixels.split(256)]))

    def _score(self, images: torch.Tensor) -> Measure:
        t = self.task
        labels = label_embeddings(t.adapter, t.labels, t.prompts)
        forget, retain = images[: self.n_forget], images[self.n_forget :]
        logits = t.adapter.model.logit_scale.exp() * forget @ labels[t.axis].T
        fa = (logits.argmax(1) == t.concept_id).float().mean().item()
        concept_p = logits.softmax(1)[:, t.concept_id].mean().item()
        preds = {axis: (retain @ emb.T).argmax(1) for axis, emb in labels.items()}
        if self.reference is None:
            self.reference = preds
        same = total = 0
        accs = []
        for axis, pred in preds.items():
            has = t.retain_val.label_ids[axis] >= 0
            if has.any():
                same += (pred[has] == self.reference[axis][has]).sum().item()
                total += int(has.sum())
                accs.append((pred[has] == t.retain_val.label_ids[axis][has]).float().mean().item())
        return Measure(fa, concept_p, same / max(total, 1), sum(accs) / max(len(accs), 1))
