"""The forget target: fixed, the oracle's as a request records it, measured on a cached retrain
oracle, or (with neither) the fixed default recorded as an estimate."""

import shutil

import pytest
import torch
from safetensors.torch import save_file

from razor.baselines.retrain import oracle_fa, oracle_folder
from razor.config import RazorParams, RetrainParams, SlugParams, TrainParams
from razor.data import read_manifest
from razor.families.clip.adapter import load_clip
from razor.families.clip.task import ClipTask
from razor.families.clip.zeroshot import image_embeddings, label_embeddings
from razor.target import resolve


@pytest.fixture(scope="module")
def task(demo_manifest, tmp_path_factory):
    return ClipTask.build(load_clip("demo"), read_manifest(demo_manifest, verify=False), "objects:star",
                          forget_size=16, retain_size=16, eval_size=40)


@pytest.mark.parametrize("cls", [RazorParams, SlugParams, TrainParams])
def test_fixed_and_recorded_targets(task, cls):
    p, record = resolve(task, cls(forget_target=0.08))
    assert p.forget_target == 0.08 and record == {"value": 0.08, "source": "fixed"}
    p, record = resolve(task, cls(forget_target="oracle", oracle_fa=0.1, oracle_margin=0.05))
    assert p.forget_target == pytest.approx(0.15) and record["oracle_fa"] == 0.1
    assert record["source"] == "oracle (recorded in the request)"


def test_no_oracle_keeps_the_default_and_says_it_is_an_estimate(task):
    p, record = resolve(task, RazorParams(forget_target="oracle"))
    assert p.forget_target == 0.05 and record["source"] == "estimate" and "retrain" in record["why"]


def test_a_cached_oracle_is_measured_on_forget_val(task):
    """A stand-in oracle folder holding θ0's weights, while the live model differs: the oracle's FA
    is θ0's on forget-val, and the live weights are left as they were."""
    params = task.adapter.parameters()
    labels = label_embeddings(task.adapter, {"objects": task.labels["objects"]}, task.prompts)["objects"]
    with torch.no_grad():
        expected = ((image_embeddings(task.adapter, task.forget_val.pixels) @ labels.T).argmax(1) == task.concept_id)
    folder = oracle_folder(task, RetrainParams())
    folder.mkdir(parents=True)
    try:
        save_file({n: q.detach().contiguous() for n, q in params.items()}, str(folder / "model.safetensors"))
        with torch.no_grad():
            params["visual_projection.weight"].mul_(-1.0)  # the live model is no longer the oracle
        live = {n: q.detach().clone() for n, q in params.items()}
        fa, where = oracle_fa(task)
        assert where == folder and fa == pytest.approx(expected.float().mean().item())
        assert all(torch.equal(q, live[n]) for n, q in params.items())
        p, record = resolve(task, RazorParams(forget_target="oracle"))
        assert p.forget_target == pytest.approx(min(1.0, fa + 0.03), abs=1e-4)
        assert record["source"] == "oracle (measured on forget-val)" and record["oracle"] == str(folder)
    finally:
        shutil.rmtree(folder)
        with torch.no_grad():
            params["visual_projection.weight"].mul_(-1.0)
