"""Bad input gives one clear error naming the problem and the fix, and writes nothing."""


import pytest
import torch
from click.testing import CliRunner
from transformers import CLIPModel

from razor.cli import main
from razor.data import read_manifest, write_manifest
from razor.demo import DEMO_CLIP as DEMO_MODEL
from razor.demo import world
from razor.demo.tokenizer import build_tokenizer
from razor.families.clip.adapter import demo_config, load_clip


def run(args):
    return CliRunner().invoke(main, args)


def test_unknown_label(tmp_path):
    out = tmp_path / "out"
    res = run(["unlearn", "--forget", "unicorn", "--out", str(out)])
    assert res.exit_code == 2 and "unknown label 'unicorn'" in res.output and "objects:" in res.output
    assert not out.exists()


def test_empty_forget_set(demo_manifest, tmp_path):
    m = read_manifest(demo_manifest, verify=False)
    rows = [r for r in m.rows if not (r["split"] == "train" and r["objects"] == "star")]
    path = write_manifest(rows, tmp_path / "nostar.parquet", axes=m.axes, prompts=m.prompts, root=m.root)
    out = tmp_path / "out"
    res = run(["unlearn", "--data", str(path), "--forget", "star", "--out", str(out)])
    assert res.exit_code == 2 and "forget set is empty" in res.output and "add training images" in res.output
    assert not out.exists()


def test_manifest_whose_file_hash_does_not_match(demo_manifest, tmp_path):
    m = read_manifest(demo_manifest, verify=False)
    rows = [dict(r) for r in m.rows[:50]]
    rows[7]["sha256"] = "0" * 64
    path = write_manifest(rows, tmp_path / "tampered.parquet", axes=m.axes, prompts=m.prompts, root=m.root)
    res = run(["unlearn", "--data", str(path), "--forget", "star", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and rows[7]["item_id"] in res.output and "changed since import" in res.output
    assert not (tmp_path / "out").exists()


def save_model(folder, layers: int, nan: bool = False):
    tok = build_tokenizer(world.vocabulary())
    cfg = demo_config(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    cfg.text_config.num_hidden_layers = cfg.vision_config.num_hidden_layers = layers
    model = CLIPModel(cfg)
    if nan:
        with torch.no_grad():
            model.text_model.encoder.layers[0].mlp.fc1.weight[0, 0] = float("nan")
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def test_model_with_no_transformer_blocks(demo_manifest, tmp_path):
    folder = save_model(tmp_path / "empty-model", layers=0)
    res = run(["unlearn", "--model", str(folder), "--data", str(demo_manifest), "--forget", "star",
               "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "no transformer blocks" in res.output
    assert not (tmp_path / "out").exists()


def test_nan_or_inf_weights(demo_manifest, tmp_path):
    folder = save_model(tmp_path / "nan-model", layers=1, nan=True)
    res = run(["unlearn", "--model", str(folder), "--data", str(demo_manifest), "--forget", "star",
               "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "text_model.encoder.layers.0.mlp.fc1.weight holds NaN or Inf" in res.output
    assert not (tmp_path / "out").exists()


def test_nan_gradients_stop_the_edit_before_any_change(demo_manifest):
    from razor.errors import NumericalError
    from razor.families.clip.task import ClipTask as Task

    adapter = load_clip("demo")
    task = Task.build(adapter, read_manifest(demo_manifest, verify=False), "star", forget_size=16, retain_size=16)
    name = "text_model.encoder.layers.0.mlp.fc1.weight"
    before = adapter.parameters()[name].detach().clone()
    with pytest.raises(NumericalError, match=f"gradient of {name} has NaN or Inf"):
        task.gradient([name], task.forget, lambda b: adapter.forget_objective(b.pixels, [["x"] * len(b)]) * float("nan"))
    assert torch.equal(adapter.parameters()[name], before)


def test_pickled_weights_are_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((DEMO_MODEL / "config.json").read_text())
    torch.save({"w": torch.ones(1)}, folder / "pytorch_model.bin")
    res = run(["unlearn", "--model", str(folder), "--forget", "star", "--data", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "pytorch_model.bin: refused" in res.output


def test_hub_id_that_cannot_be_resolved_offline():
    from razor.errors import ModelError

    with pytest.raises(ModelError, match="cannot load CLIP model 'openai/clip-vit-base-patch32'.*local folder"):
        load_clip("openai/clip-vit-base-patch32")


def test_a_mistyped_model_path_is_named(tmp_path):
    res = run(["unlearn", "--model", str(tmp_path / "no-such-model"), "--forget", "star", "--data", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "cannot read the config of model" in res.output and "no-such-model" in res.output


def test_invalid_method_parameters(tmp_path):
    res = run(["unlearn", "--forget", "star", "--param", "rho=7", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "rho" in res.output and "less than or equal to 1" in res.output
    res = run(["unlearn", "--forget", "star", "--param", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output


def test_an_output_folder_razor_did_not_write_is_never_replaced(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    res = run(["unlearn", "--forget", "star", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "was not written by razor" in res.output
    assert precious.read_text() == "keep me"


def test_threshold_selection_needs_tau():
    res = run(["unlearn", "--forget", "star", "--param", "select=threshold"])
    assert res.exit_code == 2 and "select: threshold needs tau" in res.output


def test_towers_the_model_does_not_have_are_refused_before_any_work(tmp_path):
    res = run(["unlearn", "--forget", "star", "--param", "towers=[xattn]", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "CLIP models have no tower xattn; choose towers among vision, text" in res.output
    assert not (tmp_path / "out").exists()
    res = run(["unlearn", "--forget", "star", "--method", "slug", "--param", "towers=[vision,projector]"])
    assert res.exit_code == 2 and "no tower projector" in res.output
