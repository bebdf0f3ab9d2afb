"""The step search on a one-weight model whose measures are known functions of the step, so what it
must choose, and how many probes that may cost, can be worked out by hand."""

import math

import torch

from razor.components import Component, Slice
from razor.config import SearchParams
from razor.editing import step_search
from razor.probe import Measure, Probe, WholeProbe

N = 64  # forget and retain items: FA and retain move in steps of 1/64
C = Component("x.0.v", "x", 0, "v", (Slice("w"),))


def items(share: float) -> float:
    return math.ceil(N * min(1.0, max(0.0, share))) / N


class Scripted(Probe):
    """Measures that are functions of the step: FA (in items), the concept's probability (FA unless
    given) and retain (`cost` lost per unit step); the quantised model behaves as if the step were
    `keep` times as large (quantisation undoes a part of it). With `margins`, item i's margin is
    (i + ½)/N − step, and FA counts the items whose margin is above 0."""

    def __init__(self, params, fa=lambda s: items(1 - s), concept_p=None, cost=0.02, keep=1.0, margins=False):
        super().__init__(task=None)
        self.params, self.fa, self.concept_p, self.cost, self.keep = params, fa, concept_p or fa, cost, keep
        self.margins = margins
        self.current = self.measure()

    def at(self, step: float) -> Measure:
        if self.margins:
            ms = tuple((i + 0.5) / N - step for i in range(N))
            fa = sum(m > 0 for m in ms) / N
            return Measure(fa, fa, items(1 - self.cost * step), 0.9, margins=ms)
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
    p = SearchParams(**{"forget_target": 0.05, "retain_tolerance": 0.06, "probes": 10, "search": "predict", **kw})
    eta, m, tried = step_search(probe, C, params, {"w": torch.ones(1, dtype=torch.float64)}, probe.current, p)
    assert params["w"].item() == 1.0 + eta  # the model is left at the chosen step
    return eta, m, tried


def test_bisect_finds_the_smallest_met_step_and_checks_it_quantised_with_the_first_found():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)})
    eta, m, tried = search(probe, search="bisect")
    smallest = 1 - 3 / N  # FA 3/64 ≤ 0.05 from here on
    assert m.fa <= 0.05 and smallest <= eta <= smallest * 1.1
    checked = [t["eta"] for t in tried if t["quantized_fa"]]
    first_met = next(t["eta"] for t in tried if t["met"])
    assert checked == [first_met, eta]  # quantised: the first step found to meet the target, and the chosen one
    assert probe.counts == {"partial": 0, "full": len(tried) + 2}


def test_predict_brackets_the_smallest_met_step_and_checks_only_it_quantised():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)})  # no margins: the bracket is bisected
    eta, m, tried = search(probe)
    smallest = 1 - 1 / N  # FA 1/64 ≤ 0.025, predict's goal (half the target), from here on
    assert m.fa <= 0.025 and smallest <= eta <= smallest * 1.1
    assert [t["eta"] for t in tried if t["quantized_fa"]] == [eta]  # the chosen step only
    assert probe.counts == {"partial": 0, "full": len(tried) + 1}


def test_with_margins_the_gap_to_the_target_leads_to_the_smallest_met_step_in_few_probes():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)}, margins=True)
    eta, m, tried = search(probe)
    smallest = 1 - 1 / N - 0.5 / N  # the second-highest margin reaches 0 here (FA 1/64 ≤ 0.025)
    assert m.fa <= 0.025 and smallest <= eta <= smallest * 1.1
    bisected = search(Scripted({"w": torch.ones(1, dtype=torch.float64)}), search="bisect")[2]
    assert len(tried) <= 5 < len(bisected)


def test_a_step_that_fails_quantised_sends_the_search_above_it():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)}, keep=0.85, margins=True)  # quantised: 15 % less step
    eta, m, tried = search(probe)
    p = SearchParams(search="predict")
    assert m.holds(probe.at(0.85 * eta).fa, p)
    failed = [t for t in tried if t["quantized_fa"] and not t["measure"].holds(t["quantized_fa"][4], p)]
    assert failed and all(t["eta"] < eta and not t["met"] for t in failed)


def test_quantisation_must_keep_the_goal_unless_one_item_is_already_more_than_it():
    m = Scripted({"w": torch.ones(1, dtype=torch.float64)}, margins=True).at(1 - 3.25 / N)  # FA 3/64
    assert m.fa == 3 / N and m.gap(0.05) < 0 < m.gap(0.04)
    predict, bisect = SearchParams(search="predict"), SearchParams(search="bisect")
    assert bisect.goal == 0.05 and predict.goal == 0.025  # predict aims at half the target
    assert m.holds(3 / N, bisect) and not m.holds(4 / N, bisect)
    assert m.holds(1 / N, predict) and not m.holds(2 / N, predict)
    few = Measure(0.0, 0.0, 1.0, 1.0, margins=(-1.0,) * 16)  # 16 images: one is 0.0625 > 0.05
    assert few.holds(1 / 16, predict) and not few.holds(2 / 16, predict)
    assert not few.holds(1 / 16, bisect)  # the default keeps the target itself


def test_a_direction_that_makes_the_concept_more_likely_is_given_up_after_two_probes():
    probe = Scripted({"w": torch.ones(1, dtype=torch.float64)}, fa=lambda s: 1.0, concept_p=lambda s: 0.9 + s, cost=0.0)
    eta, m, tried = search(probe)
    assert eta == 0.0 and len(tried) == 2 and probe.params["w"].item() == 1.0


class TwoWeights(Scripted):
    """Two components that forget alike: FA from the sum of both steps, retain lost at `costs` per unit each."""

    def __init__(self, costs):
        self.costs = costs
        super().__init__({"a": torch.ones(1, dtype=torch.float64), "b": torch.ones(1, dtype=torch.float64)}, margins=True)

    def measure(self, component=None):
        sa, sb = self.params["a"].item() - 1.0, self.params["b"].item() - 1.0
        m = self.at(sa + sb)
        return Measure(m.fa, m.concept_p, items(1 - self.costs[0] * sa - self.costs[1] * sb), 0.9, margins=m.margins)


def test_a_predicted_round_searches_the_more_promising_candidate_first_and_stops_once_one_steps():
    from razor.editing import _first_promising

    probe = TwoWeights(costs=(0.16, 0.02))  # b forgets at an eighth of a's retain cost
    a, b = Component("x.0.a", "x", 0, "a", (Slice("a"),)), Component("x.0.b", "x", 0, "b", (Slice("b"),))
    d = {c.name: {c.params[0]: torch.ones(1, dtype=torch.float64)} for c in (a, b)}
    p = SearchParams(forget_target=0.05, retain_tolerance=0.06, probes=10, robust_bits=None, search="predict")
    c, eta, m, tried = _first_promising(probe, [a, b], probe.params, d, probe.current, p)
    assert c is b and m.fa <= 0.05 and probe.params["a"].item() == 1.0 and probe.params["b"].item() == 1.0 + eta
    assert probe.counts["full"] == 2 + len(tried) - 1  # two opening probes, then b's search (its first: the opening)


def test_a_step_may_leave_an_already_forgotten_concept_at_the_forget_target_not_past_it():
    """keep_forgotten: a concept the model already forgot may come back on its val items up to forget_target
    (0.05, not predict's own goal of half of it); a step past that is out of bounds, however well it forgets."""
    from dataclasses import replace

    class Kept(Scripted):
        def __init__(self, params, rate):
            self.rate = rate
            super().__init__(params)

        def at(self, step):
            return replace(super().at(step), kept_fa=items(self.rate * step))

    eta, m, tried = search(Kept({"w": torch.ones(1, dtype=torch.float64)}, rate=0.04))  # 3 of 64 items back at η 1
    assert m.fa <= 0.025 and 0.025 < m.kept_fa <= 0.05 and any(t["met"] for t in tried)
    eta, m, tried = search(Kept({"w": torch.ones(1, dtype=torch.float64)}, rate=0.08))  # past 0.05 before FA meets
    assert not any(t["met"] for t in tried) and m.kept_fa <= 0.05


class MovesOnlyFor(WholeProbe):
    """Validation measures of a real model that forget only once `target`'s weights move (retain kept):
    every other component's step leaves the concept as likely as before."""

    def __init__(self, task, target: Component):
        super().__init__(task)
        self.target, self.params = target, task.adapter.parameters()
        self.origin = target.flat(self.params).clone()
        self.current = self.measure()

    def measure(self, component=None):
        moved = not torch.equal(self.target.flat(self.params), self.origin)
        return Measure(0.0 if moved else 1.0, 0.0 if moved else 0.9, 1.0, 0.9)


def test_a_round_where_no_candidate_steps_hands_the_next_round_the_next_ones(demo_manifest):
    """The expansion goes on past a round whose every candidate found no step (the model unchanged, so they
    are not searched again): the best-ranked component whose weights round 0's four candidates do not share is edited in round 1."""
    from razor.config import EditParams, RankParams, RazorParams
    from razor.data import read_manifest
    from razor.editing import candidates, edit, rank
    from razor.families import build_task, load_model

    task = build_task(load_model("demo"), read_manifest(demo_manifest), "objects:star", retain_size=64, batch_size=64)
    p = RazorParams(k=1, search="predict", candidates=4, robust_bits=None)
    ranking = rank(task, p.part(RankParams))
    comps = candidates(task.adapter, None, "both")
    order = [comps[s["component"]] for s in sorted(ranking.scores, key=lambda s: -s["score"])]
    first = {n for c in order[:4] for n in c.params}  # round 0's candidates' tensors
    target = next(c for c in order[4:] if not first & set(c.params))
    result = edit(task, p.part(EditParams), ranking, MovesOnlyFor(task, target), None, progress=False)
    assert [(r["round"], r["eta"] > 0) for r in result.rounds] == [(0, False), (1, True)]
    assert result.delta.meta["components"] == [target.name]
