"""Governance with the real stack: intake of sequential requests behind the regression gate, audit
(and tampering), rollback. The third request is the style edit with the kept-forgotten guard
switched off: it brings back what the second forgot and is refused; the fourth, the same style
with the guard, passes, and the production model has forgotten all three concepts."""

import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from prefect.artifacts import Artifact
from transformers import CLIPModel

from flows import queue, registry
from flows.gate import sets
from flows.intake import intake
from razor.cli import main
from razor.data import read_manifest
from razor.errors import RazorError
from razor.families import load_model
from razor.families.clip.serve import serve
from razor.families.clip.metrics import forget_and_utility
from razor.families.clip.task import ClipTask as Task
from stages.workspace import Workspace
from tests.workspace import NO_ATTACKS, ROOT, changed_params, make_workspace, one_byte_changed

pytestmark = pytest.mark.stack

MODEL = "clip-demo"
SEQUENCE = ("demo-object-star", "demo-identity-hana", "striped-unguarded", "demo-style-striped")
FORGOTTEN = ("demo-object-star", "demo-identity-hana", "demo-style-striped")
UNGUARDED = ("id: striped-unguarded\nmodel: demo\nconcept: {kind: style, label: striped}\n"
             "params: {keep_forgotten: false, kept_weight: 0}\n")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, demo_manifest, prefect_server):
    # the plain step (precondition: none), with which this chain's refusals were measured: CLIP's default retain-shaped
    # step leaves the earlier concepts' inputs alone, so the unguarded request passes the gate with it
    params = changed_params({**NO_ATTACKS, "  # precondition: none": "  precondition: none"})
    w = Workspace(make_workspace(tmp_path_factory.mktemp("governance"), params, requests=False))
    mlflow.set_tracking_uri(f"sqlite:///{w.root / 'mlflow.db'}")
    return w


def cli(ws, *args):
    return CliRunner().invoke(main, [*args, "--workspace", str(ws.root)])


@pytest.fixture(scope="module")
def sequence(ws, tmp_path_factory):
    """The four requests submitted, then run by one intake: each edits the production version."""
    unguarded = tmp_path_factory.mktemp("requests") / "striped-unguarded.yaml"
    unguarded.write_text(UNGUARDED)
    for rid in SEQUENCE:
        path = unguarded if rid == "striped-unguarded" else ROOT / "data/requests" / f"{rid}.yaml"
        out = cli(ws, "request", "submit", str(path))
        assert out.exit_code == 0, out.output
    return intake(str(ws.root))


def test_submit_refuses_bad_requests_and_duplicates(ws, sequence, tmp_path):
    cases = {
        "id: demo-object-star\nconcept: {kind: object, label: star}\n": "already submitted",
        "id: x1\nmodel: nowhere/clip\nconcept: {kind: object, label: star}\n": "neither `demo`",
        "id: x2\nconcept: {kind: object, label: star}\nforget_data: missing.parquet\n": "does not exist under the data root",
        "id: x3\nconcept: {kind: object, label: star}\nforget_data: ../../etc/passwd\n": "relative to the data root",
    }
    for text, message in cases.items():
        path = tmp_path / "r.yaml"
        path.write_text(text)
        out = cli(ws, "request", "submit", str(path))
        assert out.exit_code == 2 and message in out.output, out.output
    assert [e["id"] for e in queue.entries(ws)] == list(SEQUENCE)


def test_three_requests_in_a_row_are_all_forgotten(ws, sequence):
    assert [e["state"] for e in sequence] == ["done", "done", "refused", "done"], [e["reason"] for e in sequence]
    assert [e["model_version"] for e in sequence] == ["1", "2", "3", "4"]
    assert registry.production(MODEL) == "4"
    chain = registry.chain(MODEL, "4")
    assert [v.tags["razor.request"] for v in chain] == list(FORGOTTEN)
    assert [v.tags["razor.parent_version"] for v in chain] == ["", "1", "2"]
    model = ws.model(registry.materialize(ws, MODEL, "4").relative_to(ws.data).as_posix())
    for rid in FORGOTTEN:
        fa1, _ = forget_and_utility(Task.load(model, sets(ws, rid)))
        assert fa1 <= 0.10, (rid, fa1)
    # utility on held-out items that carry none of the forgotten concepts (the last request's retain set)
    _, utility = forget_and_utility(Task.load(model, sets(ws, FORGOTTEN[-1])))
    _, base_utility = forget_and_utility(Task.load(ws.model("demo"), sets(ws, FORGOTTEN[-1])))
    assert base_utility - utility <= 0.08, (base_utility, utility)
    listed = json.loads(cli(ws, "request", "list", "--json").output)
    assert [e["state"] for e in listed] == [e["state"] for e in sequence]


def test_an_edit_that_brings_a_concept_back_is_refused(ws, sequence):
    """Measured: without the guard, the style edit on v2 re-enables the identity v2 forgot."""
    entry = sequence[2]
    assert entry["state"] == "refused" and "recognised again" in entry["reason"], entry
    assert "identities:hana" in entry["reason"] or "objects:star" in entry["reason"]
    assert registry.chain(MODEL, "3")[-1].tags["razor.gate"] == "refused"
    shown = Artifact.get("razor-gate-striped-unguarded").data  # the verdict in the Prefect UI, check by check
    assert "v3: gate refused" in shown and "recognised again" in shown and "| **no** |" in shown, shown
    # production stayed at v2: the next request edited v2, not the refused v3
    assert registry.chain(MODEL, "4")[-1].tags["razor.parent_version"] == "2"


def test_audit_passes_then_names_a_changed_delta_and_manifest(ws, sequence, tmp_path):
    out = cli(ws, "audit", f"{MODEL}@3", "--json", str(tmp_path / "audit.json"))
    assert out.exit_code == 0, out.output
    chain = json.loads((tmp_path / "audit.json").read_text())["chain"]
    assert [link["request"] for link in chain] == list(SEQUENCE[:3])
    assert [link["gate"] for link in chain] == ["passed", "passed", "refused"]
    assert all(link["components"] and link["base_tensors"] for link in chain)
    for target in (ws.stage_dir("demo-object-star", "edit") / "delta.safetensors",
                   ws.stage_dir("demo-object-star", "curate") / "retain.parquet"):
        with one_byte_changed(target):
            out = cli(ws, "audit", MODEL)
        assert out.exit_code == 1 and "MISMATCH" in out.output and str(target) in out.output, out.output
    assert cli(ws, "audit", MODEL).exit_code == 0


def test_rollback_restores_bit_identical_weights(ws, sequence):
    v1 = registry.chain(MODEL, "1")[-1].tags["razor.weights_sha256"]
    out = cli(ws, "rollback", MODEL, "--to", "1")
    assert out.exit_code == 0, out.output
    assert registry.production(MODEL) == "1"
    folder = registry.materialize(ws, MODEL, "1")
    assert registry.weights_sha256(ws.model(folder.relative_to(ws.data).as_posix()).model) == v1
    assert cli(ws, "rollback", MODEL, "--to", "4").exit_code == 0 and registry.production(MODEL) == "4"


def test_a_version_is_rebuilt_from_the_latest_built_version_whose_bytes_still_hash_right(ws, sequence, monkeypatch):
    from razor.delta import Delta

    applied = []
    apply = Delta.apply
    monkeypatch.setattr(Delta, "apply", lambda self, params: applied.append(self) or apply(self, params))
    v4 = ws.data / "models" / MODEL / "v4"
    shutil.rmtree(v4)
    assert registry.materialize(ws, MODEL, "4") == v4 and len(applied) == 1  # v2 was built (request 4 ran on it)
    shutil.rmtree(v4)
    weights = next((ws.data / "models" / MODEL / "v2").glob("*.safetensors"))
    with one_byte_changed(weights):  # a snapshot whose bytes changed is not built from
        applied.clear()
        registry.materialize(ws, MODEL, "4")
        assert len(applied) == 2  # v1's folder, then v2's and v4's deltas
    got = registry.weights_sha256(ws.model(v4.relative_to(ws.data).as_posix()).model)
    assert got == registry.chain(MODEL, "4")[-1].tags["razor.weights_sha256"]


def test_a_lost_artifact_store_is_a_finding_and_audit_leaves_no_download(ws, sequence, tmp_path, monkeypatch):
    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))  # where MLflow and the audit put what they fetch
    assert cli(ws, "audit", MODEL).exit_code == 0
    assert not list(downloads.iterdir())
    production = registry.production(MODEL)
    shutil.rmtree(ws.data / "models" / MODEL / "v1")  # rollback must rebuild v1 from its deltas
    (ws.root / "mlartifacts").rename(ws.root / "mlartifacts.lost")
    try:
        out = cli(ws, "audit", f"{MODEL}@2")
        assert out.exit_code == 1 and "MISSING registered delta" in out.output, out.output
        assert "restore the artifact store" in out.output and "Traceback" not in out.output
        out = cli(ws, "rollback", MODEL, "--to", "1")
        assert out.exit_code == 2 and "registered delta of clip-demo v1" in out.output, out.output
        assert registry.production(MODEL) == production
    finally:
        (ws.root / "mlartifacts.lost").rename(ws.root / "mlartifacts")
    assert not list(downloads.iterdir())


def test_an_edit_an_attack_brings_back_is_refused_by_the_gate(ws, sequence, tmp_path):
    """gate.attack_max: gus forgotten, but four of his images (relearn_kshot) bring him back; the gate
    names the attack and production stays where it was."""
    production = registry.production(MODEL)
    request = tmp_path / "forget-gus.yaml"
    request.write_text("id: forget-gus\nmodel: demo\nconcept: {kind: identity, label: gus}\n")
    params = ws.root / "params.yaml"
    text = params.read_text()
    params.write_text(changed_params({"  attacks: none ": "  attacks: relearn_kshot ",
                                      "  attack_max: {}": "  attack_max: {relearn_kshot: 0.5}"}, text))
    try:
        assert cli(ws, "request", "submit", str(request)).exit_code == 0
        (entry,) = intake(str(ws.root))
    finally:
        params.write_text(text)
    assert entry["state"] == "refused", entry
    assert "attack relearn_kshot brings identities:gus (request forget-gus) back: ASR" in entry["reason"], entry
    assert registry.production(MODEL) == production
    version = registry.chain(MODEL, entry["model_version"])[-1]
    assert version.tags["razor.gate"] == "refused"
    gate = mlflow.artifacts.load_dict(f"runs:/{entry['mlflow_run_id']}/gate.json")
    (row,) = [r for r in gate["checks"] if r["check"] == "attack"]
    assert row["attack"] == "relearn_kshot" and row["value"] > row["limit"] == 0.5 and not row["passed"]


def test_a_version_loads_with_mlflow_alone_answers_zero_shot_and_exports_as_a_model_folder(ws, sequence, tmp_path,
                                                                                            demo_manifest):
    """`models:/clip-demo@production` (v4: three deltas on the base) is an MLflow pyfunc model rebuilt bit-identical to
    its registered weights (a copy with a changed delta refuses to load); on held-out images of the three concepts it forgot, its top-1 answers name them at most as
    often as the gate allows, where the base model names them; `razor model export` writes a folder that transformers'
    own `from_pretrained` reads, and never over a folder razor did not write."""
    version = registry.production(MODEL)
    expected = registry.chain(MODEL, version)[-1].tags["razor.weights_sha256"]
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@production")
    assert registry.weights_sha256(model.unwrap_python_model().adapter.model) == expected
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["image"]
    copy = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version}", dst_path=str(tmp_path / "copy")))
    with one_byte_changed(copy / "artifacts" / "delta1.safetensors"), pytest.raises(RazorError):
        mlflow.pyfunc.load_model(str(copy))  # a changed delta never loads as the version
    world = read_manifest(demo_manifest, verify=False)
    base, config = load_model("demo"), model.model_config
    for concept in ("objects:star", "identities:hana", "styles:striped"):
        axis, label = concept.split(":")
        frame = pd.DataFrame({"image": [world.image_bytes(r) for r in world.rows if r[axis] == label and r["split"] == "test"]})
        named = (model.predict(frame)[axis] == label).mean()
        assert named <= 0.10 and (serve(base, frame, config)[axis] == label).mean() >= 0.7, (concept, named)
    out = cli(ws, "model", "export", f"{MODEL}@{version}", "--out", str(tmp_path / "exported"))
    assert out.exit_code == 0, out.output
    assert registry.weights_sha256(CLIPModel.from_pretrained(tmp_path / "exported")) == expected
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    out = cli(ws, "model", "export", MODEL, "--out", str(tmp_path / "mine"))
    assert out.exit_code != 0 and "was not written by razor" in out.output, out.output
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
