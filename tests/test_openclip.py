"""OpenCLIP checkpoints (razor/families/clip/openclip.py): the demo CLIP written in OpenCLIP's layout loads
back as the same model with the same zero-shot predictions, gets the same RAZOR edit through `razor unlearn`,
and its delta names the checkpoint's own tensors, so it applies to the file the user gave; a delta made for
the other layout is refused by name, and so is a checkpoint the CLIP family cannot express."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from razor.cli import main
from razor.data import read_manifest
from razor.delta import Delta, weights_sha256
from razor.errors import DeltaMismatchError, ModelError
from razor.families import build_task, detect, load_model
from razor.families.clip.openclip import CONFIG, WEIGHTS, write_openclip
from razor.families.clip.zeroshot import image_embeddings, label_embeddings, ranks

FORGET = "identities:gus"


@pytest.fixture(scope="module")
def openclip_folder(tmp_path_factory):
    """The demo CLIP as an OpenCLIP checkpoint folder."""
    folder = tmp_path_factory.mktemp("openclip") / "demo-openclip"
    write_openclip(load_model("demo"), folder)
    return folder


def test_the_demo_in_openclip_layout_loads_back_as_the_same_model(openclip_folder, demo_manifest):
    assert {CONFIG, WEIGHTS} <= {p.name for p in openclip_folder.iterdir()}
    assert not (openclip_folder / "config.json").exists() and detect(str(openclip_folder)).name == "clip"
    keys = load_file(openclip_folder / WEIGHTS).keys()
    assert {"transformer.resblocks.3.attn.in_proj_weight", "visual.transformer.resblocks.0.mlp.c_fc.weight",
            "visual.proj", "text_projection", "visual.conv1.weight", "ln_final.weight"} <= set(keys)
    hf, oc = load_model("demo"), load_model(str(openclip_folder))
    assert hf.layout is None and oc.layout.name == "open_clip"
    assert weights_sha256(hf.model) == weights_sha256(oc.model)  # every parameter bit-identical
    task = build_task(hf, read_manifest(demo_manifest), FORGET, retain_size=64, eval_size=100)
    pixels = torch.cat([task.forget_test.pixels, task.retain_test.pixels])
    predicted = [ranks(image_embeddings(a, pixels), label_embeddings(a, task.labels, task.prompts)) for a in (hf, oc)]
    for axis in task.labels:
        assert torch.equal(predicted[0][axis], predicted[1][axis]), axis


@pytest.mark.slow  # two unlearning runs
def test_razor_edits_an_openclip_checkpoint_as_the_same_model_and_its_delta_applies_to_the_file(openclip_folder, demo_manifest,
                                                                                                tmp_path):
    runs = {}
    for name, model, data in (("hf", "demo", []), ("oc", str(openclip_folder), ["--data", str(demo_manifest)])):
        out = tmp_path / name
        res = CliRunner().invoke(main, ["unlearn", "--model", model, *data, "--forget", FORGET, "--out", str(out), "--json"])
        assert res.exit_code == 0, res.output
        runs[name] = (json.loads(res.stdout), Delta.load(out / "delta.safetensors"))
    (hf, hf_delta), (oc, oc_delta) = runs["hf"], runs["oc"]
    assert oc["components"] == hf["components"] and oc["components"]
    assert abs(oc["after"]["fa1"] - hf["after"]["fa1"]) <= 0.01 and oc["after"]["fa1"] <= 0.10
    assert hf_delta.layout is None and oc_delta.layout == "open_clip"
    assert all(s.param in load_file(openclip_folder / WEIGHTS) for s in oc_delta.slices)  # the checkpoint's own keys

    checkpoint = load_file(openclip_folder / WEIGHTS)  # what a user holds: the file, no RAZOR model
    oc_delta.apply(checkpoint)
    edited = load_model(str(openclip_folder))
    oc_delta.apply_to(edited)
    assert all(torch.equal(checkpoint[k], edited.layout.tensors[k]) for k in checkpoint)
    written = tmp_path / "edited-openclip"
    write_openclip(edited, written)  # the edited model saved in its own layout is the edited file
    assert all(torch.equal(v, checkpoint[k]) for k, v in load_file(written / WEIGHTS).items())

    with pytest.raises(DeltaMismatchError, match="open_clip checkpoint layout.*own parameter names"):
        oc_delta.apply_to(load_model("demo"))
    with pytest.raises(DeltaMismatchError, match="own parameter names.*open_clip checkpoint layout"):
        hf_delta.apply_to(load_model(str(openclip_folder)))


def test_a_head_slice_of_q_k_or_v_is_the_same_rows_of_the_fused_in_proj(openclip_folder):
    oc = load_model(str(openclip_folder))
    layout = oc.layout
    params = oc.parameters()
    for c in oc.components("both"):
        for s in c.slices:
            native = layout.slice(s)
            assert native.param in layout.tensors and torch.equal(s.index(params[s.param]), native.index(layout.tensors[native.param]))
    assert layout.params_in("transformer.resblocks.0.attn.in_proj_weight") == [
        f"text_model.encoder.layers.0.self_attn.{x}_proj.weight" for x in "qkv"]


@pytest.mark.parametrize("change, said", [
    (lambda cfg: cfg["model_cfg"]["vision_cfg"].update(ls_init_value=1e-5), "ls_init_value=1e-05"),
    (lambda cfg: cfg["model_cfg"]["text_cfg"].update(pool_type="last"), "pool_type='last'"),
    (lambda cfg: cfg["model_cfg"]["vision_cfg"].update(layers=[3, 4, 6, 3]), "ResNet"),
])
def test_an_openclip_checkpoint_the_family_cannot_express_is_refused_by_name(openclip_folder, tmp_path, change, said):
    import shutil

    folder = tmp_path / "odd"
    shutil.copytree(openclip_folder, folder)
    cfg = json.loads((folder / CONFIG).read_text())
    change(cfg)
    (folder / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=said.replace("[", r"\[").replace("(", r"\(")):
        load_model(str(folder))


def test_an_openclip_checkpoint_with_pickled_weights_only_is_refused(openclip_folder, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(openclip_folder, folder)
    (folder / WEIGHTS).rename(folder / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelError, match="open_clip_pytorch_model.bin: refused"):
        load_model(str(folder))
