"""The CLIP probe: fast validation measurements for the step search.

With reuse (the default) the probe keeps the hidden states entering every vision block and
the label-prompt embeddings: a probe of a vision component re-runs only the blocks from its
layer on, a text component re-encodes only the label prompts. Without reuse every probe runs
the whole model (the reference the cache is timed against; both give the same numbers).
"""

from __future__ import annotations

import torch

from razor.components import Component
from razor.families.clip.cache import PROBE_BATCH, FrozenCache, probe_pixels
from razor.families.clip.zeroshot import label_embeddings
from razor.probe import Measure, Probe, margins
from razor.quantize import quantized


class ClipProbe(Probe):
    """Validation metrics of the current CLIP model, re-running only what an edit can change."""

    def __init__(self, task, cache: FrozenCache | None = None, reuse: bool = True):
        super().__init__(task)
        self.pixels = probe_pixels(task)
        self.n_forget, self.n_retain = len(task.forget_val), len(task.retain_val)
        self.reuse = reuse
        if reuse and cache is not None:
            self.hidden, self.images, self.labels = list(cache.hidden), cache.images, dict(cache.labels)
            self.current = self._score(self.images, self.labels)
        else:
            self.refresh()

    def partial(self, component: Component | None) -> bool:
        return self.reuse and component is not None

    @torch.no_grad()
    def refresh(self, changed: Component | None = None, taken: dict | None = None) -> Measure:
        """Bring the kept states up to date after `changed` was edited (None: anything may have) and
        measure from them; of `taken` only its quantised FA is kept (the step search measured these
        weights, but on states from before the edit)."""
        self._quantized_fa = dict(taken["quantized_fa"]) if taken else {}
        if not self.reuse:
            self.current = self.measure()
            return self.current
        a = self.task.adapter
        if changed is None or changed.tower == "text":
            self.labels = self._labels()
        if changed is None:
            self.hidden = [torch.cat(h) for h in zip(*(a.vision_inputs(b) for b in self.pixels.split(PROBE_BATCH)))]
        elif changed.tower == "vision":
            for i in range(changed.layer, len(self.hidden) - 1):
                self.hidden[i + 1] = torch.cat([a.vision_block(i, h) for h in self.hidden[i].split(PROBE_BATCH)])
        if changed is None or changed.tower == "vision":
            self.images = self._images_from(0 if changed is None else changed.layer)
        self.current = self._score(self.images, self.labels)
        return self.current

    def _labels(self) -> dict[str, torch.Tensor]:
        return label_embeddings(self.task.adapter, self.task.labels, self.task.prompts)

    def _images_from(self, layer: int) -> torch.Tensor:
        a = self.task.adapter
        return torch.cat([a.encode_images_from(layer, h) for h in self.hidden[layer].split(PROBE_BATCH)])

    def _full_images(self) -> torch.Tensor:
        return torch.cat([self.task.adapter.encode_images(b) for b in self.pixels.split(PROBE_BATCH)])

    @torch.no_grad()
    def measure(self, component: Component | None = None) -> Measure:
        """Measure the model as it is now; `component` says which part changed since refresh()."""
        if not self.reuse:
            return self._score(self._full_images(), self._labels())
        vision = component is not None and component.tower == "vision"
        text = component is not None and component.tower == "text"
        return self._score(self._images_from(component.layer) if vision else self.images,
                           self._labels() if text else self.labels)

    @torch.no_grad()
    def measure_quantized(self, bits: int) -> Measure:
        """Measure the model with its weights quantised to `bits` (a full forward)."""
        with quantized(self.task.adapter.model, bits):
            return self._score(self._full_images(), self._labels())

    def _score(self, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> Measure:
        t = self.task
        forget, retain = images[: self.n_forget], images[self.n_forget : self.n_forget + self.n_retain]
        kept = images[self.n_forget + self.n_retain :]
        logits = t.adapter.model.logit_scale.exp() * forget @ labels[t.axis].T
        fa = (logits.argmax(1) == t.concept_id).float().mean().item()
        concept_p = logits.softmax(1)[:, t.concept_id].mean().item()
        preds = {axis: (retain @ emb.T).argmax(1).cpu() for axis, emb in labels.items()}  # beside the CPU label ids
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
        return Measure(fa, concept_p, same / max(total, 1), sum(accs) / max(len(accs), 1), self._kept_fa(kept, labels),
                       margins(logits, t.concept_id))

    def _kept_fa(self, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> float:
        fas = [0.0]
        for axis, cid in self.task.kept_ids():
            has = self.task.kept_val.label_ids[axis] == cid
            if has.any():
                fas.append(((images[has.to(images.device)] @ labels[axis].T).argmax(1) == cid).float().mean().item())
        return max(fas)
