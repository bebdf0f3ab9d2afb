"""The step search's validation measures (METHOD.md §4): what every family's probe gives, and
the bookkeeping they share (the forget target met, also after quantisation)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from razor.components import Component
from razor.quantize import quantized


@dataclass(frozen=True)
class Measure:
    fa: float  # FA@1 on the forget-val items
    concept_p: float  # mean probability of the concept on them (a smooth FA)
    retain: float  # share of retain-val predictions unchanged from θ0
    accuracy: float  # mean per-axis accuracy on the retain-val items
    kept_fa: float = 0.0  # the highest FA@1 among concepts the model already forgot, on their val items
    margins: tuple[float, ...] = ()  # per forget-val item: the concept's score minus the best other's (> 0: counted in FA)

    def gap(self, target: float) -> float | None:
        """How far FA@1 is from `target`, as a smooth quantity: the (⌊target·n⌋+1)-th largest margin,
        ≤ 0 exactly when FA@1 ≤ target (None without margins)."""
        if not self.margins:
            return None
        k = math.floor(target * len(self.margins) + 1e-9)
        return sorted(self.margins, reverse=True)[k] if k < len(self.margins) else -math.inf

    def holds(self, quantized_fa: float, p) -> bool:
        """Whether forgetting holds after quantisation: the quantised FA@1 meets `p.goal`; with
        `search: predict`, where one item is already more than the target (few items, e.g. 16 images),
        one item back is allowed."""
        one = 1 / len(self.margins) if self.margins and p.search == "predict" else 0.0
        return quantized_fa <= max(p.goal, self.fa + one if one > p.goal else 0.0) + 1e-9


def margins(scores: torch.Tensor, concept) -> tuple[float, ...]:
    """Per row of `scores` (logits or log-probabilities): the best score among `concept`'s columns
    minus the best among the others."""
    mask = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    mask[concept] = True
    return tuple((scores[:, mask].max(1).values - scores[:, ~mask].max(1).values).float().cpu().tolist())


class Probe(ABC):
    """Validation metrics of the current model; a family's probe re-runs what an edit can change.
    Subclasses set `current` (the model as it is now) once they are ready. `counts`: the step
    search's probes so far, those that re-ran only what the edit changed (partial) apart from those
    that ran the whole model (full; every quantised check is one)."""

    current: Measure

    def __init__(self, task):
        self.task = task
        self.reference = None  # θ0's predictions, taken at the first measurement
        self._quantized_fa = {}
        self.counts = {"partial": 0, "full": 0}

    def partial(self, component: Component | None) -> bool:
        """Whether measuring after a change of `component` re-runs only part of the model."""
        return False

    def trial(self, component: Component) -> Measure:
        """One probe of the step search: `measure(component)`, counted."""
        self.counts["partial" if self.partial(component) else "full"] += 1
        return self.measure(component)

    def trial_quantized(self, bits: int) -> Measure:
        """One quantised probe (the whole model), counted."""
        self.counts["full"] += 1
        return self.measure_quantized(bits)

    @abstractmethod
    def measure(self, component: Component | None = None) -> Measure:
        """Measure the model as it is now; `component` says which part changed since refresh()."""

    @abstractmethod
    def refresh(self, changed: Component | None = None, taken: dict | None = None) -> Measure:
        """Bring what the probe keeps up to date after `changed` was edited (None: anything may have);
        `taken`: the step search's trial at exactly these weights (its `measure`, its `quantized_fa`)."""

    @abstractmethod
    def measure_quantized(self, bits: int) -> Measure:
        """Measure the model with its weights quantised to `bits`."""

    def met(self, p) -> bool:
        """Whether the current model meets the search's goal (`p.goal`), after `p.robust_bits` quantisation too."""
        if self.current.fa > p.goal:
            return False
        if p.robust_bits and p.robust_bits not in self._quantized_fa:
            self._quantized_fa[p.robust_bits] = self.trial_quantized(p.robust_bits).fa
        return not p.robust_bits or self.current.holds(self._quantized_fa[p.robust_bits], p)


class WholeProbe(Probe):
    """A probe whose every measurement runs the whole model (families with nothing to reuse): after
    the step search's accepted step it keeps what that trial measured instead of measuring again."""

    def refresh(self, changed: Component | None = None, taken: dict | None = None) -> Measure:
        if taken is None:
            self._quantized_fa, self.current = {}, self.measure()
        else:
            self._quantized_fa, self.current = dict(taken["quantized_fa"]), taken["measure"]
        return self.current

    @torch.no_grad()
    def measure_quantized(self, bits: int) -> Measure:
        with quantized(self.task.adapter.model, bits):
            return self.measure()
