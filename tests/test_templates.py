"""Forget and held-out wordings (razor.templates): validated with the manifest, filled from each
item's own labels, F averaged over the forget wordings, the held-out metrics apart from F's."""

import dataclasses
import json

import pyarrow.parquet as pq
import pytest
import torch

from razor.data import read_manifest, write_manifest
from razor.errors import DataError
from razor.families.clip.adapter import load_clip
from razor.families.clip.metrics import evaluate
from razor.families.clip.task import ClipTask
from razor.templates import item_texts


@pytest.fixture(scope="module")
def task(demo_manifest):
    return ClipTask.build(load_clip("demo"), read_manifest(demo_manifest, verify=False), "objects:star",
                          forget_size=24, retain_size=16, eval_size=80)


@pytest.mark.parametrize("templates, says", [
    ({"colours": {"forget": ["a {}"]}}, "axis 'colours'"),
    ({"objects": {"forget": ["a star"]}}, "must hold {}"),
    ({"objects": {"heldout": ["a {} in {colours}"]}}, "name only other axes"),
    ({"objects": {"paraphrase": ["a {}"]}}, "forget and heldout"),
])
def test_bad_wordings_are_refused_on_write_and_read(demo_manifest, tmp_path, templates, says):
    m = read_manifest(demo_manifest, verify=False)
    rows = m.rows[:4]
    with pytest.raises(DataError, match=says):
        write_manifest(rows, tmp_path / "bad.parquet", m.axes, m.prompts, root=m.root, templates=templates)
    assert not (tmp_path / "bad.parquet").exists()
    good = write_manifest(rows, tmp_path / "edited.parquet", m.axes, m.prompts, root=m.root)
    table = pq.read_table(good)
    meta = {**table.schema.metadata, b"razor.templates": json.dumps(templates).encode()}
    pq.write_table(table.replace_schema_metadata(meta), good)
    with pytest.raises(DataError, match=says):
        read_manifest(good, verify=False)


def test_wordings_are_filled_from_each_items_own_labels(task):
    texts = item_texts("a {} drawn in {styles} style", "heart", task.forget)
    styles = [task.labels["styles"][i] for i in task.forget.label_ids["styles"].tolist()]
    assert texts == [f"a heart drawn in {s} style" for s in styles]
    faces = task.retain_test.subset((task.retain_test.label_ids["identities"] >= 0).nonzero().flatten()[:3])
    assert item_texts("a {} {objects}", "dotted", faces) == [None] * 3


def test_forget_objective_averages_its_wordings(task):
    batch = task.forget.subset(range(8))
    one = {}
    for w in task.wordings("forget"):
        single = dataclasses.replace(task, templates={"objects": {"forget": [w]}}, objective="wordings")
        with torch.no_grad():
            one[w] = single.forget_loss(batch, "objects", "star").item()
    with torch.no_grad():
        both = dataclasses.replace(task, objective="wordings").forget_loss(batch, "objects", "star").item()
        label = task.forget_loss(batch, "objects", "star").item()  # the default: the label prompt alone
    assert label == pytest.approx(one["a picture of a {}"], rel=1e-5)
    assert len(one) == 3 and len(set(round(v, 4) for v in one.values())) == 3
    assert both == pytest.approx(sum(one.values()) / 3, rel=1e-5)


def test_heldout_metrics_use_their_wordings_only(task):
    out, _ = evaluate(task, bits=())
    assert {"fa1_paraphrase", "fa5_paraphrase", "utility_paraphrase", "stability_paraphrase"} <= set(out)
    assert out["stability_paraphrase"] == 1.0  # θ0 against itself
    assert out["counts"]["fa1"] == len(task.forget_test) and 0 < out["counts"]["fa1_paraphrase"] <= 2 * len(task.forget_test)
    # the label prompt as the only held-out wording measures what FA@1 and utility measure
    same = dataclasses.replace(task, templates={a: {"heldout": [p]} for a, p in task.prompts.items()})
    twin, _ = evaluate(same, bits=())
    assert twin["fa1_paraphrase"] == out["fa1"] and twin["fa5_paraphrase"] == out["fa5"]
    assert twin["utility_paraphrase"] == pytest.approx(out["utility"])
    none, _ = evaluate(dataclasses.replace(task, templates={}), bits=())
    assert not [k for k in none if k.endswith("_paraphrase")]
