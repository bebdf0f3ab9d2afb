"""Attacks that try to bring a forgotten concept back (razor.attack): each on the edited, base and
oracle models, seeded, within its budget, leaving the weights as they were."""

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from flows import gate
from razor import attack
from razor.baselines.retrain import retrain_edit
from razor.cli import main
from razor.config import AttackParams, GateParams, RetrainParams
from razor.data import read_manifest
from razor.errors import RazorError
from razor.families import DEMO_MODELS, build_task, load_model
from razor.families.clip.metrics import forget_and_utility
from razor.families.sd.attacks import concept_share
from razor.families.vlm.metrics import forget_accuracy
from razor.libquant import roundtrip
from razor.methods import method_params
from razor.pipeline import run_method
from stages.workspace import Workspace

SIZES = dict(forget_size=64, retain_size=128, eval_size=100)
ORACLE = RetrainParams(steps=40)  # a short oracle: enough to stand in for the control's column


@pytest.fixture(scope="module")
def edited(demo_manifest):
    """(the task with star forgotten by RAZOR, the base values of the edited weights)."""
    torch.manual_seed(0)
    task = build_task(load_model("demo"), read_manifest(demo_manifest), "star", **SIZES)
    base = {n: q.detach().clone() for n, q in task.adapter.parameters().items()}
    result = run_method("razor", task, method_params("razor", {}), progress=False)
    return task, {n: base[n] for n in result.delta.params}


def test_every_attack_reports_its_asr_on_the_edited_and_base_models_and_leaves_the_weights_bit_exact(edited):
    task, base = edited
    before = {n: q.detach().clone() for n, q in task.adapter.parameters().items()}
    edited_fa = forget_and_utility(task)[0]
    out = attack.run(task, "all", AttackParams(), base, progress=False)
    assert list(out) == ["relearn_retain", "relearn_kshot", "linear_probe", "mia", "quant_lib"]
    for name, a in out.items():
        assert {"budget", "asr", "base_asr", "oracle_asr", "curve", "seconds"} <= set(a), name
        assert a["curve"][-1] == {k: a[k] for k in ("budget", "asr", "base_asr", "oracle_asr")}
        assert a["oracle_asr"] is None  # no oracle cached
        if name != "mia":  # mia: below
            assert 0 <= a["asr"] <= 1 and 0 <= a["base_asr"] <= 1
    assert [c["budget"]["steps"] for c in out["relearn_retain"]["curve"]] == [10, 50]
    assert out["relearn_kshot"]["budget"] == dict(steps=20, lr=2e-4, batch=32, shots=4)
    # what an attacker gets back: four star images bring the concept back above the edited model's FA,
    # and the base model, which never lost it, keeps it (the ceiling)
    assert out["relearn_kshot"]["asr"] > edited_fa + 0.1, (edited_fa, out["relearn_kshot"])
    assert out["relearn_kshot"]["base_asr"] >= 0.8 and out["linear_probe"]["base_asr"] >= 0.8, out
    after = task.adapter.parameters()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert forget_and_utility(task)[0] == edited_fa
    assert [c["budget"]["format"] for c in out["quant_lib"]["curve"]] == ["int8", "fp4", "nf4"]
    assert out["quant_lib"]["base_asr"] >= 0.8  # the library's 4-bit keeps what the model knows
    again = attack.run(task, "relearn_kshot,linear_probe", AttackParams(), base, progress=False)
    assert {n: (a["asr"], a["base_asr"]) for n, a in again.items()} == {
        n: (out[n]["asr"], out[n]["base_asr"]) for n in again}  # seeded: the same figures again


def test_a_cached_oracle_fills_the_control_column(edited):
    task, base = edited
    oracle_task = build_task(load_model("demo"), task_manifest(task), "star", **SIZES)
    retrain_edit(oracle_task, ORACLE, progress=False)  # trains and caches the oracle of this data and concept
    out = attack.run(task, "linear_probe", AttackParams(), base, progress=False, oracle=ORACLE)
    assert 0 <= out["linear_probe"]["oracle_asr"] <= 1
    mia = attack.run(task, "mia", AttackParams(), base, progress=False, oracle=ORACLE)["mia"]
    assert mia["budget"]["reference"] == "oracle" and mia["oracle"] is None  # the reference has no AUC of its own
    assert attack.run(task, "linear_probe", AttackParams(), base, progress=False)["linear_probe"]["oracle_asr"] is None


def test_mia_shows_power_on_memorised_items_before_it_reports_and_never_reports_a_leakage_of_zero(edited):
    task, base = edited
    mia = attack.run(task, "mia", AttackParams(), base, progress=False)["mia"]
    control = mia["control"]  # 64 new items memorised in 100 steps: the attack tells them from 64 unseen
    assert control["power"] and control["auc"] >= 0.8 and control["ci"]["auc"][0] > 0.6, control
    assert mia["verdict"] in ("measured", "no signal") and 0 <= mia["auc"] <= 1
    assert mia["ci"]["auc"][0] <= mia["auc"] <= mia["ci"]["auc"][1] and 0 <= mia["tpr_at_1fpr"] <= 1
    assert mia["budget"]["reference"].startswith("none")  # no oracle cached: uncalibrated, and said so
    if mia["verdict"] == "no signal":  # the demo base does not memorise star's training images
        assert mia["base"]["ci"]["auc"][0] <= 0.5 and mia["asr"] is None and mia["base_asr"] is None
    weak = attack.run(task, "mia", AttackParams(mia_steps=1, mia_lr=1e-6), base, progress=False)["mia"]
    assert weak["verdict"] == "no power" and not weak["control"]["power"]
    assert weak["asr"] is None and weak["base_asr"] is None and weak["auc"] == mia["auc"]


def test_the_library_formats_are_bitsandbytes_own():
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(0))
    nf4 = roundtrip(w, "nf4")
    assert all(len(block.unique()) <= 16 for block in nf4.flatten().split(64))  # 4 bits: 16 levels per block
    assert (nf4 - w).abs().mean() < 0.1 and not torch.equal(nf4, w)
    int8 = roundtrip(w, "int8")
    assert (int8 - w).abs().max() <= w.abs().amax(1, keepdim=True).max() / 127


def task_manifest(task):
    return read_manifest(task.manifest_path)


def test_unknown_attacks_and_families_without_attacks_are_refused_before_any_work():
    out = CliRunner().invoke(main, ["unlearn", "--forget", "star", "--attacks", "relearn_retain,jailbreak"])
    assert out.exit_code == 2 and "unknown attack jailbreak" in out.output and "linear_probe" in out.output, out.output
    out = CliRunner().invoke(main, ["unlearn", "--model", "demo-sd", "--forget", "styles:noisy", "--attacks", "mia"])
    assert out.exit_code == 2 and "unknown attack mia for Stable Diffusion" in out.output, out.output
    assert "adversarial_prompt" in out.output, out.output
    out = CliRunner().invoke(main, ["unlearn", "--forget", "star", "--attacks", "all", "--attack-param", "lr=inf"])
    assert out.exit_code == 2 and "lr" in out.output and "Traceback" not in out.output, out.output


def test_the_pipeline_chooses_none_for_a_family_without_attacks_but_refuses_unknown_names():
    clip, sd, vlm = DEMO_MODELS["demo"], DEMO_MODELS["demo-sd"], DEMO_MODELS["demo-vlm"]
    assert attack.planned(clip, "all") == ["relearn_retain", "relearn_kshot", "linear_probe", "mia", "quant_lib"]
    assert attack.planned(clip, ("linear_probe",)) == ["linear_probe"] and attack.planned(clip, "none") == []
    assert attack.planned(sd, "all") == ["relearn_retain", "relearn_kshot", "adversarial_prompt", "concept_inversion",
                                         "quant_lib"] and attack.planned(sd, "none") == []
    assert attack.planned(vlm, "all") == ["relearn_retain", "relearn_kshot", "linear_probe", "quant_lib", "text_question"]
    bare = replace(sd, parts="razor.families.sd.adapter")  # a family whose parts list no attacks
    assert attack.planned(bare, "all") == []
    with pytest.raises(RazorError, match="no attacks are registered for Stable Diffusion"):
        attack.planned(bare, "relearn_retain")
    with pytest.raises(RazorError, match="unknown attack jailbreak"):
        attack.planned(clip, "linear_probe,jailbreak")


def test_the_gate_holds_each_attack_to_its_bound_or_to_the_oracles_plus_a_margin(tmp_path):
    ws = Workspace(tmp_path)
    found = dict(relearn_retain=dict(asr=0.30, base_asr=0.9, oracle_asr=0.20),
                 linear_probe=dict(asr=0.80, base_asr=0.9, oracle_asr=None))
    (ws.stage_dir("r1", "attack")).mkdir(parents=True)
    (ws.stage_dir("r1", "attack") / "attacks.json").write_text(json.dumps(found))

    def rows(**bounds):
        return gate.attack_rows(ws, "r1", "objects:star", GateParams(**bounds))

    assert all(r["passed"] for r in rows(attack_max=dict(relearn_retain=0.3, linear_probe=0.9),
                                         attack_margin=dict(relearn_retain=0.1)))
    failed = rows(attack_max=dict(linear_probe=0.5, relearn_kshot=0.5),
                  attack_margin=dict(relearn_retain=0.05, linear_probe=0.05))
    assert [r["passed"] for r in failed] == [False] * 4
    why = gate.reason(failed)
    assert "attack linear_probe brings objects:star (request r1) back: ASR 0.80 > 0.50" in why
    assert "attack relearn_kshot was not run on request r1" in why
    assert "attack relearn_retain brings objects:star (request r1) back: ASR 0.30 > 0.25 (the oracle's 0.20 + 0.05)" in why
    assert "attack linear_probe has no retrain oracle to compare with" in why
    with pytest.raises(ValueError, match="less than or equal to 1"):
        GateParams(attack_max=dict(linear_probe=1.5))


def test_gate_bounds_the_attack_stage_cannot_meet_are_refused_before_any_work(tmp_path):
    ws = Workspace(tmp_path)

    def check(model, attacks, **bounds):
        (tmp_path / "params.yaml").write_text(json.dumps(dict(attack=dict(attacks=attacks))))
        gate.check_bounds(ws, model, GateParams(**bounds))

    check("demo", "all", attack_max=dict(mia=0.6), attack_margin=dict(relearn_retain=0.05))
    with pytest.raises(RazorError, match="bounds the attack relearn_retain, which the attack stage does not run on "
                                         "CLIP models \\(it runs: linear_probe\\)"):
        check("demo", "linear_probe", attack_max=dict(relearn_retain=0.5))
    with pytest.raises(RazorError, match="does not run on Stable Diffusion models \\(it runs: none\\)"):
        check("demo-sd", "none", attack_max=dict(adversarial_prompt=0.2))
    with pytest.raises(RazorError, match="Stable Diffusion models have no retrain oracle; bound their attacks with gate.attack_max"):
        check("demo-sd", "all", attack_margin=dict(adversarial_prompt=0.1))
    with pytest.raises(RazorError, match="unknown attack mia for LLaVA"):
        check("demo-vlm", "mia")


def test_razor_unlearn_attacks_json_holds_each_attack(tmp_path):
    out = CliRunner().invoke(main, ["unlearn", "--forget", "star", "--attacks", "relearn_retain,linear_probe",
                                    "--attack-param", "relearn_steps=[5]", "--out", str(tmp_path / "run"), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert list(report["attacks"]) == ["relearn_retain", "linear_probe"]
    assert report["attacks"]["relearn_retain"]["budget"]["steps"] == 5
    assert report["attacks"]["linear_probe"]["base_asr"] >= 0.8
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["attacks"] == report["attacks"]


@pytest.mark.slow
def test_the_vlm_attacks_bring_an_identity_back_from_its_image_features(demo_manifest):
    """On the demo VLM, hana forgotten (FA 0): four of her images bring her back, and a probe of what the
    projector receives still reads her out, as on the base model."""
    torch.manual_seed(0)
    task = build_task(load_model("demo-vlm"), read_manifest(demo_manifest), "identities:hana", **SIZES)
    base = {n: q.detach().clone() for n, q in task.adapter.parameters().items()}
    result = run_method("razor", task, method_params("razor", {}), progress=False)
    edited_fa = forget_accuracy(task)
    out = attack.run(task, "relearn_kshot,linear_probe,text_question", AttackParams(),
                     {n: base[n] for n in result.delta.params}, progress=False)
    assert edited_fa <= 0.10 and out["relearn_kshot"]["asr"] > edited_fa + 0.1, (edited_fa, out)
    asked = out.pop("text_question")  # the language model, never edited, answers a text-only question as before
    assert asked["asr"] == asked["base_asr"] and 0 < asked["asr"] < 1 and "never edited" in asked["note"], asked
    assert out["linear_probe"]["base_asr"] >= 0.8 and out["relearn_kshot"]["base_asr"] >= 0.8, out
    assert all(a["oracle_asr"] is None for a in out.values())  # the VLM has no retrain oracle
    after = task.adapter.parameters()
    assert all(torch.equal(base[n], after[n]) for n in base if n not in result.delta.params)
    assert forget_accuracy(task) == edited_fa


@pytest.mark.slow
def test_learned_words_bring_an_erased_object_back_to_the_diffusion_model(demo_manifest):
    """UCE erases star from the demo diffusion model's cross-attention; a word embedding learned from star
    images (concept inversion) and soft prompt tokens (adversarial_prompt) draw stars again, the
    weights untouched."""
    from razor.baselines.uce import uce_edit
    from razor.config import UceParams

    torch.manual_seed(0)
    task = build_task(load_model("demo-sd"), read_manifest(demo_manifest), "objects:star", **SIZES)
    a = task.adapter
    assert torch.equal(a.encode_slots(["a dotted star"], torch.zeros(1, 0, 128)), a.encode(["a dotted star"]))
    base = {n: q.detach().clone() for n, q in a.parameters().items()}
    before = concept_share(task)
    delta = uce_edit(task, UceParams(), progress=False).delta
    edited = {n: q.detach().clone() for n, q in a.parameters().items()}
    erased = concept_share(task)
    out = attack.run(task, "adversarial_prompt,concept_inversion", AttackParams(word_steps=(10, 40)),
                     {n: base[n] for n in delta.params}, progress=False)
    assert before >= 0.75 and erased <= before - 0.3, (before, erased)
    for name, found in out.items():
        assert [c["budget"]["steps"] for c in found["curve"]] == [10, 40] and found["oracle_asr"] is None
        assert found["base_asr"] >= 0.6 and found["asr"] >= erased + 0.3, (name, erased, found)
    assert out["adversarial_prompt"]["budget"]["tokens"] == 5 and out["concept_inversion"]["budget"]["tokens"] == 1
    assert all(torch.equal(edited[n], q) for n, q in a.parameters().items())
    assert concept_share(task) == erased
