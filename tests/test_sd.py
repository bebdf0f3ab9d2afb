"""The Stable Diffusion adapter and the demo diffusion model (issue: SD family)."""

import json

import pytest
import torch
from click.testing import CliRunner

from razor.cli import main
from razor.delta import Delta
from razor.demo.sd import unet_config
from razor.errors import DataError, ModelError, RazorError
from razor.families import load_model
from razor.families.sd.adapter import SdAdapter, save_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A random-weight SD folder in the diffusers layout: the demo CLIP's text tower and a tiny UNet."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTokenizer

    from razor.demo import DEMO_CLIP

    torch.manual_seed(0)
    text = CLIPModel.from_pretrained(DEMO_CLIP, use_safetensors=True).text_model
    cfg = dict(unet_config(text.config.hidden_size), block_out_channels=(8, 8, 16, 16), attention_head_dim=2, norm_num_groups=4)
    unet = UNet2DConditionModel(**cfg)
    adapter = SdAdapter(text, CLIPTokenizer.from_pretrained(DEMO_CLIP), unet, DDIMScheduler(beta_schedule="squaredcos_cap_v2"))
    folder = tmp_path_factory.mktemp("tiny-sd")
    save_sd(adapter, folder)
    return folder


def test_an_sd_folder_loads_by_its_model_index_and_generates_reproducibly(tiny_sd):
    adapter = load_model(str(tiny_sd))
    assert isinstance(adapter, SdAdapter) and adapter.vae is None and adapter.factor == 1
    a = adapter.generate(["a dotted star", "a solid circle"], [0, 1], steps=3)
    b = adapter.generate(["a dotted star", "a solid circle"], [0, 1], steps=3)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and a.abs().max() <= 1
    assert not torch.equal(a[0], adapter.generate(["a dotted star"], [5], steps=3)[0])  # the seed matters


def test_an_sd_folder_with_pickled_weights_or_missing_parts_is_refused(tiny_sd, tmp_path):
    import shutil

    bad = tmp_path / "pickled"
    shutil.copytree(tiny_sd, bad)
    (bad / "unet/diffusion_pytorch_model.safetensors").rename(bad / "unet/diffusion_pytorch_model.bin")
    with pytest.raises(ModelError, match="unet has no .safetensors weights"):
        load_model(str(bad))
    shutil.rmtree(bad / "scheduler")
    with pytest.raises(ModelError, match="missing scheduler"):
        load_model(str(bad))


def test_sd_components_cover_text_blocks_heads_and_cross_attention_kv(tiny_sd):
    adapter = load_model(str(tiny_sd))
    params = adapter.parameters()
    comps = {c.name: c for c in adapter.components("both")}
    sites = adapter.cross_attention()
    assert len(sites) == 7 and all(n.endswith("attn2") for n, _ in sites)
    assert {"text.0.q", "text.1.fc2", "text.0.head0", "xattn.0.k", "xattn.6.v", "xattn.6.head1"} <= set(comps)
    assert {c.tower for c in comps.values()} == {"text", "xattn"}
    head = comps["xattn.6.head1"]
    assert [s.param.rsplit(".", 2)[-2] for s in head.slices] == ["to_k", "to_v"]
    assert all(s.index(params[s.param]).shape[0] == 8 for s in head.slices)  # 16 channels / 2 heads
    assert {c.name for c in adapter.components("layer")} == {n for n, c in comps.items() if c.kind != "head"}

    # the delta of a cross-attention head holds its rows of to_k and to_v only
    base = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for s in head.slices:
            s.index(params[s.param]).add_(0.1)
    delta = Delta.from_edit(base, params, [head], meta={})
    assert sorted(delta.params) == sorted(s.param for s in head.slices)


@pytest.mark.slow
def test_train_sd_writes_a_loadable_diffusers_folder(demo_manifest, tmp_path):
    out = tmp_path / "sd"
    res = CliRunner().invoke(main, ["demo", "train-sd", "--out", str(out), "--steps", "2", "--classifier-steps", "2",
                                        "--judge-steps", "2"])
    assert res.exit_code == 0 and "generated images labelled right" in res.output, res.output
    parts = {"model_index.json", "unet", "text_encoder", "tokenizer", "scheduler", "classifier", "judge", "training.json"}
    assert parts <= {p.name for p in out.iterdir()}
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 2 and record["judge"]["steps"] == 2
    assert isinstance(load_model(str(out)), SdAdapter)


def test_sd_objectives_have_gradients_at_the_base_model_where_they_should(tiny_sd):
    from razor.memory import requires_grad_only

    adapter = load_model(str(tiny_sd))
    comps = {c.name: c for c in adapter.components("layer")}
    text, xattn = comps["text.1.v"].params[0], comps["xattn.2.v"].params[0]
    concept, anchor = ["a dotted star", "a dotted moon"], ["a star", "a moon"]
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    x_t, t, eps = adapter.noised(adapter.to_latents(images), [0, 1])
    assert torch.equal(t, adapter.noised(adapter.to_latents(images), [0, 1])[1])  # fixed per seed
    with torch.no_grad():
        e_concept, e_anchor = adapter.encode(concept), adapter.encode(anchor)
        eps_anchor = adapter.predict(x_t, t, e_anchor)
        eps_neutral = adapter.predict(x_t, t, adapter.encode(["", ""]))
    params = adapter.parameters()

    def grads(loss_fn):
        with requires_grad_only(adapter.model, {text, xattn}):
            adapter.model.zero_grad()
            loss_fn().backward()
            return {n: params[n].grad.norm().item() if params[n].grad is not None else 0.0 for n in (text, xattn)}

    embed = grads(lambda: adapter.forget_embedding(concept, e_concept, e_anchor))
    assert embed[text] > 0 and embed[xattn] == 0  # the text objective reaches only the text encoder
    noise = grads(lambda: adapter.forget_noise(x_t, t, concept, eps_anchor))
    assert noise[text] > 0 and noise[xattn] > 0
    assert all(v > 0 for v in grads(lambda: adapter.retain_loss(x_t, t, eps, ["a dotted star", "a solid moon"])).values())
    assert adapter.drift_penalty(x_t, t, ["", ""], eps_neutral).item() == 0  # no drift at θ0


def test_unlearncanvas_scores_count_what_the_classifier_says():
    from razor.families.sd.metrics import Drawn, scores

    pairs = [("dotted", "star"), ("dotted", "moon"), ("solid", "star"), ("solid", "moon")]
    said = {"styles": ["dotted", "dotted", "solid", "dotted"], "objects": ["star", "star", "moon", "moon"]}
    drawn = Drawn(pairs, torch.zeros(4, 3, 32, 32), said)
    assert scores(drawn, "styles", "dotted") == dict(ua=0.0, ira=0.5, cra=0.5)
    assert scores(drawn, "objects", "moon") == dict(ua=0.5, ira=0.5, cra=1.0)
    # on a model that already forgot styles:solid (a chain's earlier request), its prompts leave IRA and CRA:
    # "a solid star" drawn as a moon is the earlier edit's intended loss, not this one's
    assert scores(drawn, "objects", "moon", forgotten=(("styles", "solid"),)) == dict(ua=0.5, ira=1.0, cra=1.0)
    with pytest.raises(ValueError, match="styles or objects"):
        scores(drawn, "identities", "hana")


def test_unlearncanvas_evaluation_draws_fixed_noise_per_prompt_and_a_grid(tiny_sd, tmp_path):
    from razor.demo import world
    from razor.families.sd.classifier import ClipClassifier
    from razor.families.sd.metrics import draw, measure, worded
    from razor.plots import image_grid

    axes = ("styles", "objects")
    adapter, judge = load_model(str(tiny_sd)), ClipClassifier({a: world.labels()[a] for a in axes}, world.LABEL_PROMPTS)
    got, drawn = measure(adapter, judge, "styles", "dotted", seeds=1, steps=2, bits=(4,),
                         wordings=("a {objects} drawn in {} style",))
    assert set(got) == {"ua", "ira", "cra", "ua_q4", "ua_paraphrase"} and all(0 <= v <= 1 for v in got.values())
    assert worded([("dotted", "star")], "styles", "a {objects} drawn in {} style") == ["a star drawn in dotted style"]
    assert worded([("dotted", "star")], "objects", "a picture of a {styles} {}") == ["a picture of a dotted star"]
    assert len(drawn.pairs) == 64 and set(drawn.said) == {"styles", "objects"}
    again = draw(adapter, judge, seeds=1, steps=2, only=("styles", "dotted"))
    assert [p[0] for p in again.pairs] == ["dotted"] * 8
    dotted = [i for i, p in enumerate(drawn.pairs) if p[0] == "dotted"]
    assert torch.allclose(again.images, drawn.images[dotted], atol=1e-5)  # the same noise before and after an edit
    image_grid([" ".join(p) for p in drawn.pairs[:4]], {"base": drawn.images[:4], "edited": drawn.images[4:8]},
               tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_a_draw_is_read_back_for_the_same_weights_and_inputs_and_made_again_otherwise(tiny_sd, tmp_path, monkeypatch):
    """The output store (razor.memo): the same weights, prompts and seeds give the stored images bit for bit;
    changed weights, other seeds, or a damaged entry draw anew; an empty RAZOR_OUTPUTS stores nothing."""
    monkeypatch.setenv("RAZOR_OUTPUTS", str(tmp_path / "outputs"))
    adapter = load_model(str(tiny_sd))
    prompts, seeds = ["a dotted star", "a noisy circle"], [3, 4]
    fresh = adapter.generate(prompts, seeds, 2)
    stored = adapter.generate(prompts, seeds, 2, remember=True)
    entries = sorted((tmp_path / "outputs").rglob("*.safetensors"))
    assert torch.equal(stored, fresh) and len(entries) == 1
    assert torch.equal(adapter.generate(prompts, seeds, 2, remember=True), fresh)  # read back
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # damaged: drawn again, and stored whole
    assert torch.equal(adapter.generate(prompts, seeds, 2, remember=True), fresh)
    assert not torch.equal(adapter.generate(prompts, [3, 5], 2, remember=True), fresh)  # other noise: another entry
    with torch.no_grad():
        adapter.unet.conv_out.bias.add_(0.5)
    edited = adapter.generate(prompts, seeds, 2, remember=True)
    assert not torch.equal(edited, fresh) and torch.equal(edited, adapter.generate(prompts, seeds, 2))
    assert len(list((tmp_path / "outputs").rglob("*.safetensors"))) == 3
    monkeypatch.setenv("RAZOR_OUTPUTS", "")
    adapter.generate(prompts, [7, 8], 2, remember=True)
    assert len(list((tmp_path / "outputs").rglob("*.safetensors"))) == 3


@pytest.fixture
def tiny_task(tiny_sd, demo_manifest):
    """Forget styles:dotted from the tiny random SD model, on a few demo-world items."""
    from razor.data import read_manifest
    from razor.families import build_task

    return build_task(load_model(str(tiny_sd)), read_manifest(demo_manifest), "styles:dotted", forget_size=8,
                      retain_size=8, eval_size=8, batch_size=8)


def test_the_sd_task_forgets_by_noise_or_by_embedding(tiny_task):
    task = tiny_task
    comps = {c.name: c for c in task.adapter.components("layer")}
    text, xattn = comps["text.1.v"].params[0], comps["xattn.2.v"].params[0]
    concept, anchor = task.prompts_of(task.forget, "styles")
    assert set(concept) <= {f"a dotted {o}" for o in task.labels["objects"]}
    assert all(a.startswith("a picture of a ") and a.split()[-1] == c.split()[-1] for c, a in zip(concept, anchor))

    noise = task.forget_gradient([text, xattn])
    assert noise[text].norm() > 0 and noise[xattn].norm() > 0
    task.use_objective("embedding")
    embed = task.forget_gradient([text, xattn])
    assert embed[text].norm() > 0 and embed[xattn].norm() == 0  # the text objective reaches only the text encoder
    with pytest.raises(RazorError, match="forget_objective 'logits' is not offered for sd models"):
        task.use_objective("logits")
    assert all(g.norm() > 0 for g in task.retain_gradient([text, xattn]).values())
    drift = task.drift_gradient([text, xattn], task.frozen_outputs())
    assert all(g.norm() == 0 for g in drift.values())  # no drift at θ0


def test_uce_maps_concept_tokens_to_their_guides_and_edits_only_cross_attention_kv(tiny_task):
    from razor.baselines.uce import _aligned, uce_edit
    from razor.config import UceParams

    a = tiny_task.adapter
    params = a.parameters()
    base = {n: p.detach().clone() for n, p in params.items()}
    result = uce_edit(tiny_task, UceParams())
    kv = {f"{n}.{proj}.weight" for n, _ in a.cross_attention() for proj in ("to_k", "to_v")}
    assert set(result.delta.params) == kv
    assert all(torch.equal(params[n], base[n]) for n in params if n not in kv)  # bit-identical elsewhere
    with torch.no_grad():
        c, guide = _aligned(a, "a dotted star", "a picture of a star")
        w0, w = base[sorted(kv)[0]], params[sorted(kv)[0]]
        assert (c @ w.T - guide @ w0.T).norm() < 0.5 * (c @ w0.T - guide @ w0.T).norm()


def test_esd_tunes_only_the_cross_attention(tiny_task):
    from razor.baselines.esd import esd_edit
    from razor.config import EsdParams

    p = EsdParams(max_steps=3, eval_every=1, batch_size=4)
    result = esd_edit(tiny_task, p, progress=False)
    assert result.delta.params and all(".attn2." in n for n in result.delta.params)
    steps, fas = [r["step"] for r in result.rounds], [r["fa_val"] for r in result.rounds]
    assert steps == list(range(1, len(steps) + 1))  # a probe after every step (eval_every 1)
    assert all(fa > p.forget_target for fa in fas[:-1])  # it went on only while the probe's FA was unmet
    assert fas[-1] <= p.forget_target or steps[-1] == p.max_steps  # and stopped once met (or out of steps)
    assert set(result.timing) == {"training", "probes"} and all(v > 0 for v in result.timing.values())


@pytest.mark.slow
def test_razor_unlearn_on_a_diffusion_model_reports_unlearncanvas_metrics(tiny_sd, demo_manifest, tmp_path):
    out = tmp_path / "run"
    args = ["unlearn", "--model", str(tiny_sd), "--data", str(demo_manifest), "--forget", "objects:star",
            "--param", "towers=[text,xattn]", "--param", "probes=2", "--param", "max_rounds=1",
            "--param", "forget_target=0.0", "--out", str(out), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    assert report["forget"] == "objects:star"
    # a folder with no classifier/ is judged by the demo CLIP, with no judge/ by the step search's classifier: the report says so
    assert report["judge"].startswith("the demo CLIP zero-shot") and "ships no classifier/" in report["judge"]
    assert "not an independent judge" in report["judge"] and "ships no judge/" in report["judge"]
    for side in ("before", "after"):  # the demo data's held-out wordings of objects give ua_paraphrase
        assert list(report[side]) == ["ua", "ira", "cra", "ua_q8", "ua_q4", "ua_paraphrase"]
        assert all(0 <= v <= 1 for v in report[side].values())
    assert (out / "image_grid.png").stat().st_size > 1000 and (out / "delta.safetensors").is_file()
    edited = Delta.load(out / "delta.safetensors").params
    assert all(n.startswith(("text_encoder.", "unet.")) and (".attn2.to_" in n or n.startswith("text_encoder.")) for n in edited)


def test_diffusion_only_methods_refuse_other_families_and_other_axes(tiny_sd, demo_manifest):
    from razor.data import read_manifest
    from razor.families import build_task

    res = CliRunner().invoke(main, ["unlearn", "--model", "demo", "--forget", "styles:dotted", "--method", "uce"])
    assert res.exit_code == 2 and "method uce does not edit CLIP models; choose one of razor, slug" in res.output
    with pytest.raises(DataError, match="forgets a style or an object"):
        build_task(load_model(str(tiny_sd)), read_manifest(demo_manifest), "identities:hana", forget_size=4,
                   retain_size=4, eval_size=4)


@pytest.mark.slow
def test_the_demo_sd_model_draws_prompts_its_classifier_and_its_judge_recognise():
    """The committed demo: generations of "a {style} {object}" labelled right ≥ 70% on each axis by
    the step search's classifier and by the judge, a second classifier trained on images rendered
    from world indices past every split of the demo data."""
    from razor.demo import DEMO_SD, world
    from razor.demo.sd import JUDGE_OFFSET, evaluate_sd
    from razor.families.sd.classifier import NetClassifier, classifier_for, judge_for

    adapter = load_model("demo-sd")
    labels = {"styles": ["dotted"], "objects": ["star"]}
    searched = classifier_for(adapter.source, labels, {})
    judge = judge_for(adapter.source, labels, {}, searched)
    assert isinstance(searched, NetClassifier) and isinstance(judge, NetClassifier)
    assert searched.judge.endswith("classifier (LabelNet)") and judge.judge.endswith("judge (LabelNet)")
    record = json.loads((DEMO_SD / "training.json").read_text())
    for net, recorded in ((searched, record["generated_accuracy"]), (judge, record["judge"]["generated_accuracy"])):
        accuracy = evaluate_sd(adapter, net)
        assert accuracy["objects"] >= 0.70 and accuracy["styles"] >= 0.70, accuracy
        assert recorded == accuracy  # as recorded
    split_sizes = {s: len(world.plan(s, 0, 120, 600)) for s in ("train", "val", "test")}
    assert record["judge"]["world_index_from"] == JUDGE_OFFSET > 20_000_000 + max(split_sizes.values())
    assert any((p1 != p2).any() for p1, p2 in zip(searched.net.parameters(), judge.net.parameters()))
    assert sum(f.stat().st_size for f in DEMO_SD.rglob("*") if f.is_file()) < 20e6
    with pytest.raises(DataError, match="cannot label styles:sketchy"):
        classifier_for(adapter.source, {"styles": ["sketchy"], "objects": ["star"]}, {})


def test_the_retain_curvature_is_the_second_moment_of_what_each_weight_reads_on_the_retain_set(tiny_task):
    """A cross-attention to_k reads the text states of the retain captions: C = mean of x·xᵀ over every token."""
    from razor.curvature import retain_moments

    a = tiny_task.adapter
    to_k = f"{a.cross_attention()[0][0]}.to_k.weight"
    text_q = next(n for n in a.parameters() if n.startswith("text_encoder.") and n.endswith("q_proj.weight"))
    moments = retain_moments(tiny_task, [to_k, text_q])
    with torch.no_grad():
        x = a.encode(tiny_task.retain.captions).reshape(-1, a.text_encoder.config.hidden_size).double()
    assert torch.allclose(moments[to_k], x.T @ x / len(x), rtol=1e-4, atol=1e-6)
    assert moments[text_q].shape == (x.shape[1],) * 2 and torch.linalg.eigvalsh(moments[text_q]).min() >= -1e-9
    with pytest.raises(ModelError, match="final_layer_norm.weight are not"):
        retain_moments(tiny_task, ["text_encoder.final_layer_norm.weight"])
