"""The Stable Diffusion adapter and the demo diffusion model (issue: SD family)."""

import json

import pytest
import torch
from click.testing import CliRunner

from razor.adapters.loading import load_model
from razor.adapters.sd import SdAdapter
from razor.cli import main
from razor.delta import Delta
from razor.demo.sd import Classifier, save_folder, unet_config
from razor.errors import ModelError, RazorError


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A random-weight SD folder in the diffusers layout: the demo CLIP's text tower and a tiny UNet."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTokenizer

    from razor.demo.sd import DEMO_CLIP

    torch.manual_seed(0)
    text = CLIPModel.from_pretrained(DEMO_CLIP, use_safetensors=True).text_model
    cfg = dict(unet_config(text.config.hidden_size), block_out_channels=(8, 16, 16), attention_head_dim=2, norm_num_groups=4)
    unet = UNet2DConditionModel(**cfg)
    adapter = SdAdapter(text, CLIPTokenizer.from_pretrained(DEMO_CLIP), unet, DDIMScheduler(beta_schedule="squaredcos_cap_v2"))
    folder = tmp_path_factory.mktemp("tiny-sd")
    save_folder(adapter, folder)
    return folder


def test_an_sd_folder_loads_by_its_model_index_and_generates_reproducibly(tiny_sd):
    adapter = load_model(str(tiny_sd))
    assert isinstance(adapter, SdAdapter) and adapter.vae is None and adapter.factor == 2
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


def test_unlearning_an_sd_model_says_the_family_is_not_built_yet(tiny_sd):
    from razor.families import family

    with pytest.raises(RazorError, match="cannot unlearn that family yet"):
        family(load_model(str(tiny_sd)))


def test_train_sd_writes_a_loadable_diffusers_folder(demo_manifest, tmp_path):
    out = tmp_path / "sd"
    res = CliRunner().invoke(main, ["demo", "train-sd", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0 and "generated images labelled right" in res.output, res.output
    parts = {"model_index.json", "unet", "text_encoder", "tokenizer", "scheduler", "training.json"}
    assert parts <= {p.name for p in out.iterdir()}
    assert json.loads((out / "training.json").read_text())["steps"] == 2
    assert isinstance(load_model(str(out)), SdAdapter)


def test_sd_objectives_have_gradients_at_the_base_model_where_they_should(tiny_sd):
    from razor.task import requires_grad_only

    adapter = load_model(str(tiny_sd))
    comps = {c.name: c for c in adapter.components("layer")}
    text, xattn = comps["text.1.v"].params[0], comps["xattn.2.v"].params[0]
    concept, anchor = ["a dotted star", "a dotted moon"], ["a star", "a moon"]
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    x_t, t, eps = adapter.noised(adapter.to_latents(images), [0, 1])
    assert torch.equal(t, adapter.noised(adapter.to_latents(images), [0, 1])[1])  # fixed per seed
    with torch.no_grad():
        e_concept, e_anchor = adapter.encode(concept), adapter.encode(anchor)
        eps_anchor = adapter.eps(x_t, t, e_anchor)
        eps_neutral = adapter.eps(x_t, t, adapter.encode(["", ""]))
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
    from razor.sd.metrics import Drawn, scores

    pairs = [("dotted", "star"), ("dotted", "moon"), ("solid", "star"), ("solid", "moon")]
    said = {"styles": ["dotted", "dotted", "solid", "dotted"], "objects": ["star", "star", "moon", "moon"]}
    drawn = Drawn(pairs, torch.zeros(4, 3, 32, 32), said)
    assert scores(drawn, "styles", "dotted") == dict(ua=0.0, ira=0.5, cra=0.5)
    assert scores(drawn, "objects", "moon") == dict(ua=0.5, ira=0.5, cra=1.0)
    with pytest.raises(ValueError, match="styles or objects"):
        scores(drawn, "identities", "hana")


def test_unlearncanvas_evaluation_draws_fixed_noise_per_prompt_and_a_grid(tiny_sd, tmp_path):
    from razor.plots import image_grid
    from razor.sd.metrics import draw, evaluate

    adapter, classifier = load_model(str(tiny_sd)), Classifier()
    got, drawn = evaluate(adapter, classifier, "styles", "dotted", seeds=1, steps=2, bits=(4,))
    assert set(got) == {"ua", "ira", "cra", "ua_q4"} and all(0 <= v <= 1 for v in got.values())
    assert len(drawn.pairs) == 64 and set(drawn.said) == {"styles", "objects"}
    again = draw(adapter, classifier, seeds=1, steps=2, only=("styles", "dotted"))
    assert [p[0] for p in again.pairs] == ["dotted"] * 8
    dotted = [i for i, p in enumerate(drawn.pairs) if p[0] == "dotted"]
    assert torch.allclose(again.images, drawn.images[dotted], atol=1e-5)  # the same noise before and after an edit
    image_grid([" ".join(p) for p in drawn.pairs[:4]], {"base": drawn.images[:4], "edited": drawn.images[4:8]},
               tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
