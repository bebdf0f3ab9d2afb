"""Governance for every family with the real stack: two requests in a row through `razor intake` on
the demo diffusion model, the demo SD3-style model and the demo VLM. Each promoted version is a full model folder in its
family's layout that loads back bit-identical to its registered weights; rollback, the gate and
the audit work as for CLIP. The requests are the committed demo requests, so each must also meet
its family's bar through every stage."""

import io
import json

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from flows import queue, registry
from flows.intake import intake
from razor.cli import main
from razor.delta import Delta
from razor.families import load_model
from stages.workspace import Workspace
from tests.workspace import NO_ATTACKS, ROOT, changed_params, make_workspace, one_byte_changed

pytestmark = pytest.mark.stack

CHAINS = {  # each chain: a committed demo request from the base model, then another on its v1
    "sd-demo-sd": ("demo-sd-style-noisy", "demo-sd-object-star"),
    "sd3-demo-sd3": ("demo-sd3-style-noisy", "demo-sd3-object-star"),
    "vlm-demo-vlm": ("demo-vlm-identity-hana", "demo-vlm-identities-hana-ivan"),
}
FORGETS = {"demo-sd-object-star": "objects:star", "demo-sd-style-noisy": "styles:noisy",
           "demo-sd3-object-star": "objects:star", "demo-sd3-style-noisy": "styles:noisy"}
# Measured (2 CPU cores, these requests): both chains pass params.yaml's gate (FA ≤ 0.10, utility within 8 points).
# The object on the SD v1 (the style already erased) reaches UA 0.94, the chain's utility ends 4.5 points below the
# base model's; hana + ivan on the VLM v1 reaches FA 0.06, the chain's utility 2.7 points below the base model's.
LAYOUT = {"sd-demo-sd": ("model_index.json", "text_encoder", "unet", "scheduler", "tokenizer", "classifier"),
          "sd3-demo-sd3": ("model_index.json", "text_encoder", "text_encoder_2", "transformer", "scheduler", "tokenizer_2",
                           "classifier", "judge"),
          "vlm-demo-vlm": ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json")}


def cli(ws, *args):
    return CliRunner().invoke(main, [*args, "--workspace", str(ws.root)])


@pytest.fixture(scope="module", params=list(CHAINS))
def chain(request, tmp_path_factory, prefect_server):
    """(the workspace, the registered model, the intake's queue entries) after both requests ran."""
    name = request.param
    params = changed_params(NO_ATTACKS)  # the attacks: tests/test_attacks.py
    ws = Workspace(make_workspace(tmp_path_factory.mktemp(name), params=params, requests=False))
    mlflow.set_tracking_uri(f"sqlite:///{ws.root / 'mlflow.db'}")
    for rid in CHAINS[name]:
        out = cli(ws, "request", "submit", str(ROOT / "data/requests" / f"{rid}.yaml"))
        assert out.exit_code == 0, out.output
    return ws, name, intake(str(ws.root))


def test_both_requests_are_promoted_under_the_familys_name(chain):
    ws, name, entries = chain
    assert [e["state"] for e in entries] == ["done", "done"], [e["reason"] for e in entries]
    assert {e["registered_model"] for e in entries} == {name} and [e["model_version"] for e in entries] == ["1", "2"]
    assert registry.production(name) == "2"
    versions = registry.chain(name, "2")
    assert [v.tags["razor.request"] for v in versions] == list(CHAINS[name])
    assert [v.tags["razor.gate"] for v in versions] == ["passed", "passed"]
    assert [e["state"] for e in queue.entries(ws)] == ["done", "done"]


def test_each_request_meets_its_familys_bar_through_every_stage(chain):
    """SD, the UnlearnCanvas bar: UA from ≤ 0.25 to ≥ 0.90 (on v1 too), IRA and CRA within 10 points
    of the model edited; only text-encoder and cross-attention to_k / to_v change; the image grid drawn;
    the judge named. VLM: FA to ≤ 0.10 (from ≥ 0.85 on the base; on v1, hana already forgotten, from
    ≥ 0.40), utility down at most 5 points; only vision / projector change."""
    ws, name, _ = chain
    for i, rid in enumerate(CHAINS[name]):
        report = json.loads((ws.stage_dir(rid, "evaluate") / "report.json").read_text())
        before, after = report["before"], report["after"]
        delta = Delta.load(ws.stage_dir(rid, "edit") / "delta.safetensors")
        assert report["components"] and delta.params
        if name in ("sd-demo-sd", "sd3-demo-sd3"):
            assert list(before) == list(after) == ["ua", "ira", "cra", "ua_q8", "ua_q4", "ua_paraphrase"]
            assert all(0 <= v <= 1 for v in [*before.values(), *after.values()])
            assert report["forget"] == FORGETS[rid]
            assert before["ua"] <= 0.25 and after["ua"] >= 0.90, report
            assert after["ira"] >= before["ira"] - 0.10 and after["cra"] >= before["cra"] - 0.10, report
            assert report["judge"].endswith("judge (LabelNet)")  # the model's own judge (carried by each version's folder)
            if name == "sd-demo-sd":
                assert all(c.startswith(("text.", "xattn.")) for c in report["components"])
                assert all(n.startswith("text_encoder.") or n.endswith((".attn2.to_k.weight", ".attn2.to_v.weight"))
                           for n in delta.params)
            else:  # both CLIP encoders and the joint attention's context stream
                assert all(c.startswith(("text.", "text_2.", "ctx.")) for c in report["components"])
                assert all(n.startswith(("text_encoder.", "text_encoder_2.")) or ".attn.add_" in n or ".attn.to_add_out." in n
                           for n in delta.params)
            assert ws.plot(rid, "image_grid.png").is_file()
        else:
            assert list(before) == list(after) == ["fa", "utility", "fa_q8", "fa_q4", "fa_paraphrase"]
            assert before["fa"] >= (0.85 if i == 0 else 0.40) and after["fa"] <= 0.10, report
            assert after["fa_paraphrase"] <= 0.15, report  # in the question's held-out wordings too
            assert after["utility"] >= before["utility"] - 0.05, report
            assert set(report["utility_per_axis"]["after"]) == {"identities", "objects", "styles"}
            assert all(c.startswith(("vision.", "projector.")) for c in report["components"])
    if name == "vlm-demo-vlm":
        assert report["forget"] == "identities:hana+ivan"  # several labels in one request, end to end
        assert set(report["fa_per_label"]["after"]) == {"hana", "ivan"}, report["fa_per_label"]


def test_a_materialised_version_is_a_model_folder_of_its_family_with_the_registered_weights(chain):
    ws, name, _ = chain
    for version in ("1", "2"):
        folder = registry.materialize(ws, name, version)
        assert all((folder / part).exists() for part in LAYOUT[name]), sorted(p.name for p in folder.iterdir())
        adapter = load_model(str(folder))
        assert adapter.family == name.split("-")[0]
        assert registry.weights_sha256(adapter.model) == registry.chain(name, version)[-1].tags["razor.weights_sha256"]


def test_a_version_loads_with_mlflow_alone_and_answers_in_its_familys_terms(chain):
    """v2 as an MLflow pyfunc model: rebuilt from its base and both deltas bit-identical to its registered weights;
    SD draws a PNG image per prompt and seed (the same seed, the same image), the VLM answers each image's question."""
    ws, name, _ = chain
    model = mlflow.pyfunc.load_model(f"models:/{name}/2")
    assert registry.weights_sha256(model.unwrap_python_model().adapter.model) == registry.chain(name, "2")[-1].tags["razor.weights_sha256"]
    if name in ("sd-demo-sd", "sd3-demo-sd3"):
        out = model.predict(pd.DataFrame({"prompt": ["a noisy star", "a dotted circle", "a noisy star"], "seed": [0, 1, 0]}))
        images = [Image.open(io.BytesIO(b)) for b in out["image"]]
        assert all(im.format == "PNG" and im.size[0] > 0 for im in images) and out["image"][0] == out["image"][2]
    else:
        example = model.input_example
        out = model.predict(example)
        assert list(out.columns) == ["answer"] and len(out) == len(example) and all(isinstance(a, str) for a in out["answer"])


def test_rollback_to_v1_is_bit_exact(chain):
    ws, name, _ = chain
    v1 = registry.chain(name, "1")[-1].tags["razor.weights_sha256"]
    out = cli(ws, "rollback", name, "--to", "1")
    assert out.exit_code == 0, out.output
    assert registry.production(name) == "1"
    folder = registry.materialize(ws, name, "1")
    assert registry.weights_sha256(load_model(str(folder)).model) == v1
    assert cli(ws, "rollback", name, "--to", "2").exit_code == 0 and registry.production(name) == "2"


def test_audit_is_clean_then_names_a_changed_delta(chain, tmp_path):
    ws, name, _ = chain
    out = cli(ws, "audit", f"{name}@2", "--json", str(tmp_path / "audit.json"))
    assert out.exit_code == 0, out.output
    links = json.loads((tmp_path / "audit.json").read_text())["chain"]
    assert [link["request"] for link in links] == list(CHAINS[name])
    target = ws.stage_dir(CHAINS[name][0], "edit") / "delta.safetensors"
    with one_byte_changed(target):
        out = cli(ws, "audit", name)
    assert out.exit_code == 1 and "MISMATCH" in out.output and str(target) in out.output, out.output
    assert cli(ws, "audit", name).exit_code == 0
