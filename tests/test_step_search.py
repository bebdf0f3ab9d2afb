"""The step search on a one-weight model whose measures are known functions of the step, so what it
must choose, and how many probes that may cost, can be worked out by hand."""

import math

import torch

from razor.components import Component, Slice
from razor.config import SearchParams
from razor.editing import step_search
from razor.probe import Measure, Probe

N = 64  # forget and retain items: FA and retain move in steps of 1/64
C = Component("x.0.v", "x", 0, "v", (Slice("w"),))


def items(share: float) -> float:
    return math.ceil(N * min(1.0, max(0.0, share))) / N


class Scripted(Probe):
    """Measures that are functions of the step: FA (in items), the concept's probability (FA unless
    given) and retain (`cost` lost per unit step); the quantised model behaves as if the step were
    `keep` times as large (quantisation undoes a part of it)."""

    def __init__(self, params, fa=lambda s: items(1 - s), concept_p=None, cost=0.02, keep=1.0):
        super().__init__(task=None)
        self.params, self.fa, self.concept_p, self.cost, self.keep = params, fa, concept_p or fa, cost, keep
        self.current = self.measure()

    def at(self, step: float) -> Measure:
        return Measure(self.fa(step), self.concept_p(step), items(1 - self.cost * step), 0.9)

    def measure(self, component=None):
        return self.at(self.params["w"].item() - 1.0)

    def measure_quantized(self, bits):
        return self.at(self.keep * (self.params["w"].item() - 1.0))

    def refresh(self, changed=None, taken=None):
        self.current = self.measure()
        return self.current


def search(probe, **kw):
    params = probe.params
    p = SearchParams(**{"forget_target": 0.05, "retain_tolerance": 0.06, "probes": 10, **kw})
    eta, m, tried = step_search(probe, C, params, {"w": torch.ones(1, dtype=torch.float64)}, probe.current, p)
    assert params["w"].item() == 1.0 + eta  # the model is left at the chosen step
    return eta, m, tried


def test_the_smallest_step_that_meets_the_target_is_found_and_checked_quantised_with_the_first_found():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)})
    eta, m, tried = search(probe)
    smallest = 1 - 3 / N  # FA 3/64 ≤ 0.05 from here on
    assert m.fa <= 0.05 and smallest <= eta <= smallest * 1.1
    checked = [t["eta"] for t in tried if t["quantized_fa"]]
    first_met = next(t["eta"] for t in tried if t["met"])
    assert checked == [first_met, eta]  # quantised: the first step found to meet the target, and the chosen one
    assert probe.counts == {"partial": 0, "full": len(tried) + 2}


def test_a_step_that_fails_quantised_sends_the_search_above_it():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)}, keep=0.9)  # the quantised model forgets a tenth less
    eta, m, tried = search(probe)
    assert probe.at(0.9 * eta).fa <= 0.05 and eta > 1 - 3 / N
    failed = [t for t in tried if t["quantized_fa"] and t["quantized_fa"][4] > 0.05]
    assert failed and all(t["eta"] < eta and not t["met"] for t in failed)


def test_a_direction_that_makes_the_concept_more_likely_is_given_up_after_two_probes():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)}, fa=lambda s: 1.0, concept_p=lambda s: 0.9 + s, cost=0.0)
    eta, m, tried = search(probe)
    assert eta == 0.0 and len(tried) == 2 and probe.params["w"].item() == 1.0
