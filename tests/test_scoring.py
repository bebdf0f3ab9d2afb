"""The ratio-aware score and the selections, on hand-made gradients."""

import math

import pytest
import torch

from razor.components import Component, Slice
from razor.scoring import pareto_front, ratio_scores, select


def comp(name, tower="text"):
    return Component(name, tower, 0, "fc1", (Slice(name),))


def setup():
    comps = [comp("a"), comp("b"), comp("c"), comp("d", "vision")]
    w = {n: torch.ones(4) for n in "abcd"}
    g_f = {"a": torch.tensor([2.0, 0, 0, 0]), "b": torch.tensor([4.0, 0, 0, 0]),
           "c": torch.tensor([1.0, 0, 0, 0]), "d": torch.tensor([0.2, 0, 0, 0])}
    g_r = {"a": torch.tensor([-1.0, 0, 0, 0]), "b": torch.tensor([1.0, 0, 0, 0]),
           "c": torch.tensor([0.0, 1, 0, 0]), "d": torch.tensor([0.0, 1, 0, 0])}
    return comps, w, g_f, g_r


def test_ratio_score_rewards_forget_pressure_and_penalises_conflict():
    comps, w, g_f, g_r = setup()
    rows = {r["component"]: r for r in ratio_scores(comps, w, g_f, g_r, alpha=1.0, normalize="none")}
    assert rows["a"]["importance"] == pytest.approx(2 / 2)  # ‖g_f‖ / ‖θ‖ with ‖θ‖ = 2
    assert rows["a"]["score"] == pytest.approx(1.0 * 2)  # cos −1: the forget step also helps retention
    assert rows["b"]["score"] == pytest.approx(0.0)  # cos +1: it fights retention
    assert rows["c"]["score"] == pytest.approx(0.5)
    abs_rows = {r["component"]: r for r in ratio_scores(comps, w, g_f, g_r, alpha=1.0, alignment="abs", normalize="none")}
    assert abs_rows["a"]["score"] == pytest.approx(0.0)
    flat = {r["component"]: r for r in ratio_scores(comps, w, g_f, g_r, alpha=0.0, normalize="none")}
    assert flat["b"]["score"] == pytest.approx(2.0)  # α = 0 is SLUG's importance alone


def test_tower_normalisation_lets_both_towers_compete():
    comps, w, g_f, g_r = setup()
    rows = {r["component"]: r for r in ratio_scores(comps, w, g_f, g_r, alpha=1.0, normalize="tower")}
    assert rows["d"]["score"] == pytest.approx(1.0)  # the vision tower's best, scaled to 1
    assert math.isclose(rows["a"]["score"], 2 * 2 / 4)


def test_selections():
    comps, w, g_f, g_r = setup()
    rows = ratio_scores(comps, w, g_f, g_r, alpha=1.0, normalize="none")
    assert select(rows, "topk", k=2) == ["a", "c"]
    assert select(rows, "threshold", tau=0.4) == ["a", "c"]
    assert {r["component"] for r in pareto_front(rows)} == {"b", "c"}  # a and d are dominated
    assert select(rows, "pareto")[0] == "b"
    with pytest.raises(ValueError):
        select(rows, "threshold")
