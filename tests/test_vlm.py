"""The demo VLM: a tiny LLaVA on the demo CLIP's vision tower, trained by the project's script and
committed as safetensors; the base model answers the demo world's questions."""

import json

from click.testing import CliRunner

from razor.cli import main
from razor.data import read_manifest
from razor.demo.vlm import DEMO_VLM, QUESTIONS, evaluate_vlm, load_demo_vlm


def test_committed_demo_vlm_answers_every_question_type(demo_manifest):
    assert not list(DEMO_VLM.glob("*.bin")) and (DEMO_VLM / "model.safetensors").stat().st_size < 20e6
    accuracy = evaluate_vlm(load_demo_vlm(), read_manifest(demo_manifest).split("test"))
    assert set(accuracy) == set(QUESTIONS) and min(accuracy.values()) >= 0.85, accuracy
    recorded = json.loads((DEMO_VLM / "training.json").read_text())["test_accuracy"]
    assert all(abs(recorded[a] - accuracy[a]) <= 0.01 for a in QUESTIONS)  # the record is what the weights do


def test_train_vlm_writes_a_loadable_model(demo_manifest, tmp_path):
    out = tmp_path / "vlm"
    res = CliRunner().invoke(main, ["demo", "train-vlm", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0 and "test answer accuracy" in res.output, res.output
    assert {"model.safetensors", "config.json", "tokenizer.json", "training.json"} <= {p.name for p in out.iterdir()}
    adapter = load_demo_vlm(out)
    assert adapter.model.config.image_token_index == adapter.tokenizer.convert_tokens_to_ids("<image>")


def test_llava_components_and_losses(demo_manifest):
    import torch

    from razor.demo.vlm import PREPROCESS
    from razor.pairs import Pairs
    from razor.task import requires_grad_only

    adapter = load_demo_vlm()
    names = {c.name for c in adapter.components("both")}
    assert {"vision.0.q", "vision.3.fc2", "vision.3.head3"} <= names and not any(n.startswith("projector") for n in names)
    adapter.projector = True
    assert {"projector.0.linear_1", "projector.1.linear_2"} <= {c.name for c in adapter.components("layer")}
    adapter.model.config.vision_feature_layer = -2  # LLaVA's default: the last block feeds nothing
    assert adapter.used_vision_blocks() == 3 and "vision.3.q" not in {c.name for c in adapter.components("layer")}
    adapter.model.config.vision_feature_layer = -1

    test = read_manifest(demo_manifest).split("test")
    hana = test.filter(lambda r: r["identities"] == "hana").take(range(8))
    pixels = Pairs.load(hana, PREPROCESS).pixels
    asked = [QUESTIONS["identities"]] * len(hana)
    assert adapter.answers(pixels, asked).count("hana") >= 6
    params = adapter.parameters()
    chosen = [n for n in params if ".encoder.layers.2." in n and n.endswith("weight")]
    with requires_grad_only(adapter.model, set(chosen)):
        forget = adapter.forget_objective(pixels, asked, "hana")
        grads = torch.autograd.grad(forget, [params[n] for n in chosen])
    assert forget.item() > 0 and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    frozen = adapter.frozen_logits(pixels, asked)
    assert adapter.drift_penalty(pixels, asked, frozen).item() == 0.0
    assert adapter.retain_loss(pixels, asked, ["hana"] * len(hana)) < adapter.retain_loss(pixels, asked, ["juno"] * len(hana))
