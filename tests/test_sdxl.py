"""The Stable Diffusion XL family (issue: SD3 and SDXL): a shrunken random-weight SDXL-base folder."""

import json

import pytest
import torch

from razor.architectures import sdxl_parts, write
from razor.errors import ModelError
from razor.families import detect, load_model, save_model
from razor.families.sd.adapter import SLOT
from razor.families.sdxl.adapter import SdxlAdapter
from tests.diffusion import unlearn


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    return write("sdxl", tmp_path_factory.mktemp("sdxl") / "model", sample_size=4, width=1 / 16, depth=1 / 6)


def test_the_sdxl_layout_has_sdxl_base_sizes():
    from razor.architectures import _tokenizer

    with torch.device("meta"):
        text, text_2, unet, vae, _ = sdxl_parts(_tokenizer(77))
    sizes = [round(sum(p.numel() for p in m.parameters()) / 1e6) for m in (text, text_2, unet, vae)]
    assert sizes == [123, 695, 2567, 84]
    assert unet.config.cross_attention_dim == 2048 and unet.config.projection_class_embeddings_input_dim == 2816


def test_an_sdxl_folder_is_its_own_family_and_encodes_and_draws_as_diffusers_own_pipeline(tiny_sdxl):
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    assert detect(str(tiny_sdxl)).name == "sdxl"
    a = load_model(str(tiny_sdxl))
    assert isinstance(a, SdxlAdapter) and a.family == "sdxl" and a.vae is not None
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl), use_safetensors=True)
    pipe.scheduler = DDIMScheduler.from_config(a.scheduler.config)
    prompts = ["a dotted star", "a striped cat"]
    with torch.no_grad():
        tokens, empty, pooled, empty_pooled = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                                                 do_classifier_free_guidance=True)
        states = a.encode(prompts)
        assert torch.equal(states[:, :-1], tokens) and torch.equal(states[:, -1, :a.pooled], pooled)
        assert torch.equal(states[:, -1, a.pooled:], torch.zeros_like(states[:, -1, a.pooled:]))
        uncond = a.unconditional(2)  # force_zeros_for_empty_prompt
        assert torch.equal(uncond[:, :-1], empty) and torch.equal(uncond[:, -1, :a.pooled], empty_pooled)
        drawn = pipe(prompts, num_inference_steps=4, guidance_scale=4.0, latents=a.noise([1, 2]), output_type="pt",
                     height=32, width=32).images
        ours = a.generate(prompts, [1, 2], steps=4, guidance=4.0)
    assert torch.equal(ours / 2 + 0.5, drawn)  # bit for bit: text states, pooled embedding, time ids, guidance, VAE
    assert torch.equal(a.encode_slots(prompts, torch.zeros(2, 0, a.word_embeddings().shape[1])), states)
    # a learned word is one row of both encoders' word embeddings side by side: the word's own rows give its states
    dotted = a.tokenizer("dotted", add_special_tokens=False).input_ids
    words = a.word_embeddings()[dotted].view(1, len(dotted), -1)
    assert words.shape[-1] == a.text_encoder.config.hidden_size + a.text_encoder_2.config.hidden_size
    with torch.no_grad():
        slotted = a.encode_slots([f"a {' '.join([SLOT] * len(dotted))} star"], words)
        assert torch.equal(slotted, a.encode(["a dotted star"]))


def test_sdxl_components_cover_both_text_encoders_and_the_cross_attention(tiny_sdxl):
    a = load_model(str(tiny_sdxl))
    comps = a.components("both")
    towers = {c.tower for c in comps}
    assert towers == {"text", "text_2", "xattn"}
    two = a.text_encoder_2.config
    heads = [c for c in comps if c.tower == "text_2" and c.kind == "head"]
    assert len(heads) == two.num_hidden_layers * two.num_attention_heads
    assert all(s.param.startswith("text_encoder_2.") for c in heads for s in c.slices)
    xattn = [c for c in comps if c.tower == "xattn" and c.kind in ("k", "v")]
    assert xattn and all(a.parameters()[c.params[0]].shape[1] == a.width for c in xattn)  # both encoders' states
    one = a.text_encoder.config.num_hidden_layers  # the first encoder's last block feeds nothing the UNet reads
    assert {c.layer for c in comps if c.tower == "text"} == set(range(one - 1))
    assert len(a.blocks()) == one - 1 + two.num_hidden_layers + 3 + 1 + 3


def test_an_sdxl_folder_saves_in_its_own_layout_and_loads_back_bit_for_bit(tiny_sdxl, tmp_path):
    a = load_model(str(tiny_sdxl))
    save_model(a, tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    b = load_model(str(tmp_path / "copy"))
    assert all(torch.equal(p, b.parameters()[n]) for n, p in a.parameters().items())


def test_an_sdxl_folder_with_a_missing_part_or_another_models_unet_is_refused(tiny_sdxl, tmp_path):
    import shutil

    from diffusers import UNet2DConditionModel

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sdxl, broken)
    shutil.rmtree(broken / "tokenizer_2")
    with pytest.raises(ModelError, match="is not a Stable Diffusion XL folder .missing tokenizer_2.*tokenizer_2/"):
        load_model(str(broken))
    a = load_model(str(tiny_sdxl))
    sd_unet = UNet2DConditionModel(**{**a.unet.config, "addition_embed_type": None, "cross_attention_dim": 48})
    with pytest.raises(ModelError, match="is not SDXL's: it takes addition_embed_type 'text_time'"):
        SdxlAdapter(a.text_encoder, a.text_encoder_2, a.tokenizer, a.tokenizer_2, sd_unet, a.scheduler, a.vae)
    refiner = tmp_path / "refiner"
    refiner.mkdir()
    index = json.loads((tiny_sdxl / "model_index.json").read_text()) | {"text_encoder": [None, None]}
    (refiner / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="RAZOR edits .*Stable Diffusion XL"):
        detect(str(refiner))


@pytest.mark.slow
@pytest.mark.parametrize("method, touched", [("razor", None), ("uce", ".attn2.to_"), ("esd", ".attn2.")])
def test_razor_unlearn_on_an_sdxl_folder_reports_the_sd_familys_metrics_and_edits_only_what_it_names(
        tiny_sdxl, demo_manifest, tmp_path, method, touched):
    report, changed, delta = unlearn(tiny_sdxl, demo_manifest, "objects:star", method, tmp_path / "run")
    for side in ("before", "after"):
        assert list(report[side]) == ["ua", "ira", "cra", "ua_q8", "ua_q4", "ua_paraphrase"]
    assert changed <= set(delta.params)  # bit-identical outside the delta
    if touched:
        assert changed and all(touched in n for n in changed)
