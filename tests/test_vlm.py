"""The demo VLM: a tiny LLaVA on the demo CLIP's vision tower, trained by the project's script and
committed as safetensors; the base model answers the demo world's questions."""

import json

from click.testing import CliRunner

from razor.cli import main
from razor.data import read_manifest
from razor.demo.vlm import DEMO_VLM, QUESTIONS, evaluate_vlm, load_demo_vlm


def test_committed_demo_vlm_answers_every_question_type(demo_manifest):
    assert not list(DEMO_VLM.glob("*.bin")) and (DEMO_VLM / "model.safetensors").stat().st_size < 20e6
    model, tokenizer = load_demo_vlm()
    accuracy = evaluate_vlm(model, tokenizer, read_manifest(demo_manifest).split("test"))
    assert set(accuracy) == set(QUESTIONS) and min(accuracy.values()) >= 0.85, accuracy
    recorded = json.loads((DEMO_VLM / "training.json").read_text())["test_accuracy"]
    assert all(abs(recorded[a] - accuracy[a]) <= 0.01 for a in QUESTIONS)  # the record is what the weights do


def test_train_vlm_writes_a_loadable_model(demo_manifest, tmp_path):
    out = tmp_path / "vlm"
    res = CliRunner().invoke(main, ["demo", "train-vlm", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0 and "test answer accuracy" in res.output, res.output
    assert {"model.safetensors", "config.json", "tokenizer.json", "training.json"} <= {p.name for p in out.iterdir()}
    model, tokenizer = load_demo_vlm(out)
    assert model.config.image_token_index == tokenizer.convert_tokens_to_ids("<image>")
