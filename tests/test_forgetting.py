"""RAZOR on the demo model: one style and one identity, each forgotten like the issue asks (FA@1
≥ 0.9 → ≤ 0.1, utility −3 points at most, stability ≥ 0.9, 4-bit FA@1 ≤ 0.15); the object (star)
is the pipeline's request, held to the same bar in tests/test_pipeline.py."""

import pytest

from razor import unlearn


@pytest.mark.slow
@pytest.mark.parametrize("concept", ["styles:dotted", "identities:hana"])
def test_razor_forgets_one_concept_and_keeps_the_rest(concept, demo_manifest):
    r = unlearn(concept, model="demo", data=demo_manifest, progress=False)
    before, after = r["before"], r["after"]
    assert before["fa1"] >= 0.9
    assert after["fa1"] <= 0.1
    assert before["utility"] - after["utility"] <= 0.03
    assert after["stability"] >= 0.9
    assert after["fa1_q4"] <= 0.15
    assert 1 <= len(r["components"]) <= 12
