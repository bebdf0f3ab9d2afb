"""The Stable Diffusion 3 family (issue: SD3 and SDXL): a shrunken random-weight SD3-medium folder, and the
demo SD3-style model."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from razor.architectures import _tokenizer, sd3_parts, write
from razor.cli import main
from razor.errors import ModelError
from razor.families import FAMILIES, detect, load_model, save_model
from razor.families.sd.adapter import SLOT
from razor.families.sd3.adapter import T5_LENGTH, Sd3Adapter
from tests.diffusion import unlearn


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    return write("sd3-medium", tmp_path_factory.mktemp("sd3") / "model", sample_size=4, width=1 / 16, depth=1 / 8,
                 max_sequence_length=8)  # SD3's 256 rows in T5's place would make every pass 4× dearer


def test_the_sd3_layout_has_sd3_mediums_sizes():
    with torch.device("meta"):
        text, text_2, transformer, vae, _ = sd3_parts(_tokenizer(77))
    sizes = [round(sum(p.numel() for p in m.parameters()) / 1e6) for m in (text, text_2, transformer, vae)]
    assert sizes == [124, 695, 2028, 84]
    cfg = transformer.config
    assert (cfg.joint_attention_dim, cfg.pooled_projection_dim, cfg.num_layers, cfg.in_channels) == (4096, 2048, 24, 16)


def test_an_sd3_folder_is_its_own_family_and_encodes_and_draws_as_diffusers_own_pipeline(tiny_sd3):
    from diffusers import StableDiffusion3Pipeline

    assert detect(str(tiny_sd3)).name == "sd3"
    a = load_model(str(tiny_sd3))
    assert isinstance(a, Sd3Adapter) and a.family == "sd3" and a.vae is not None and a.max_sequence_length == 8
    pipe = StableDiffusion3Pipeline.from_pretrained(str(tiny_sd3), use_safetensors=True, text_encoder_3=None,
                                                    tokenizer_3=None, image_encoder=None, feature_extractor=None)
    prompts = ["a dotted star", "a striped cat"]
    with torch.no_grad():
        tokens, empty, pooled, empty_pooled = pipe.encode_prompt(prompts, prompts, prompts, device="cpu",
                                                                 do_classifier_free_guidance=True, max_sequence_length=8)
        states, uncond = a.encode(prompts), a.unconditional(2)
        assert torch.equal(states[:, :-1], tokens) and torch.equal(states[:, -1, :a.pooled], pooled)
        assert torch.equal(uncond[:, :-1], empty) and torch.equal(uncond[:, -1, :a.pooled], empty_pooled)
        drawn = pipe(prompts, num_inference_steps=4, guidance_scale=4.0, latents=a.noise([1, 2]), output_type="pt",
                     height=32, width=32, max_sequence_length=8).images
        ours = a.generate(prompts, [1, 2], steps=4, guidance=4.0)
    assert torch.equal(ours / 2 + 0.5, drawn)  # bit for bit: context, pooled, flow-matching Euler, guidance, VAE shift
    dotted = a.tokenizer("dotted", add_special_tokens=False).input_ids
    words = a.word_embeddings()[dotted].view(1, len(dotted), -1)  # a learned word: one row per CLIP encoder
    with torch.no_grad():
        assert torch.equal(a.encode_slots([f"a {' '.join([SLOT] * len(dotted))} star"], words), a.encode(["a dotted star"]))


def test_an_sd3_folder_loads_in_the_precision_asked_for(tiny_sd3):
    a = load_model(str(tiny_sd3), "bf16")  # diffusers alone leaves the MMDiT in float32, and the VAE then refuses its latents
    assert {p.dtype for p in [*a.model.parameters(), *a.vae.parameters()]} == {torch.bfloat16}
    with torch.no_grad():
        assert a.to_latents(torch.zeros(1, 3, 32, 32)).dtype == torch.bfloat16


def test_sd3_is_trained_and_measured_by_flow_matching(tiny_sd3):
    a = load_model(str(tiny_sd3))
    x0 = torch.randn(3, *a.latent_shape())
    x_t, t, v = a.noised(x0, [1, 2, 3])
    again = a.noised(x0, [1, 2, 3])
    assert all(torch.equal(u, w) for u, w in zip((x_t, t, v), again))  # one fixed draw per seed
    sigma = (t / 1000).view(-1, 1, 1, 1)
    eps = v + x0  # the target is the velocity ε − x0, and x_t lies on the straight path from x0 to ε
    assert torch.allclose(x_t, (1 - sigma) * x0 + sigma * eps, atol=1e-6) and ((t > 0) & (t < 1000)).all()
    schedule = a.scheduler.timesteps
    assert all(float(s) in schedule.tolist() for s in t)  # on the training schedule (shifted)
    sampler = a.sampler(5)
    assert type(sampler).__name__ == "FlowMatchEulerDiscreteScheduler" and len(sampler.timesteps) == 5


def test_sd3_components_cover_both_text_encoders_and_the_context_stream_and_optionally_the_image_stream(tiny_sd3):
    a = load_model(str(tiny_sd3))
    comps = a.components("both")
    assert {c.tower for c in comps} == {"text", "text_2", "ctx", "image"}
    assert FAMILIES["sd3"].default_towers == ("text", "text_2", "ctx")
    cfg = a.transformer.config
    ctx = [c for c in comps if c.tower == "ctx"]
    assert len([c for c in ctx if c.kind == "head"]) == cfg.num_layers * cfg.num_attention_heads
    last = cfg.num_layers - 1  # context_pre_only: its context stream has q / k / v and no output projection
    assert sorted(c.kind for c in ctx if c.layer == last and c.kind != "head") == ["k", "q", "v"]
    params = a.parameters()
    head = next(c for c in ctx if c.kind == "head" and c.layer == 0)
    assert [s.param.rsplit(".", 2)[-2] for s in head.slices] == ["add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
    assert all(s.param in params for c in comps for s in c.slices)
    assert set(a.text_attention()) == {n for n in params if ".attn.add_" in n or ".attn.to_add_out." in n}
    assert len(a.blocks()) == sum(t.n_layers for t in a.towers()) + cfg.num_layers


def test_an_sd3_folder_saves_in_its_own_layout_and_loads_back_bit_for_bit(tiny_sd3, tmp_path):
    a = load_model(str(tiny_sd3))
    a.max_sequence_length = 16
    save_model(a, tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline" and index["text_encoder_3"] == [None, None]
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"] and index["max_sequence_length"] == 16
    b = load_model(str(tmp_path / "copy"))
    assert b.max_sequence_length == 16 and all(torch.equal(p, b.parameters()[n]) for n, p in a.parameters().items())
    a.max_sequence_length = T5_LENGTH  # the pipeline's default: the folder names no length, and loads back with 256
    save_model(a, tmp_path / "default")
    assert "max_sequence_length" not in json.loads((tmp_path / "default" / "model_index.json").read_text())
    assert load_model(str(tmp_path / "default")).max_sequence_length == T5_LENGTH == 256


def test_an_sd3_folder_with_t5_or_another_models_transformer_is_refused(tiny_sd3, tmp_path):
    from diffusers import SD3Transformer2DModel

    with_t5 = tmp_path / "t5"
    shutil.copytree(tiny_sd3, with_t5)
    index = json.loads((with_t5 / "model_index.json").read_text())
    (with_t5 / "model_index.json").write_text(json.dumps(index | {"text_encoder_3": ["transformers", "T5EncoderModel"]}))
    with pytest.raises(ModelError, match="has a T5 encoder .text_encoder_3/.*text_encoder_3=None"):
        load_model(str(with_t5))
    a = load_model(str(tiny_sd3))
    other = SD3Transformer2DModel(**{**a.transformer.config, "pooled_projection_dim": 64})
    with pytest.raises(ModelError, match="come from different models"):
        Sd3Adapter(a.text_encoder, a.text_encoder_2, a.tokenizer, a.tokenizer_2, other, a.scheduler, a.vae)


@pytest.mark.slow
@pytest.mark.parametrize("method, touched", [
    ("razor", None),
    ("uce", {"transformer.context_embedder.weight", "transformer.time_text_embed.text_embedder.linear_1.weight"}),
    ("esd", (".attn.add_", ".attn.to_add_out.")),
])
def test_razor_unlearn_on_an_sd3_folder_reports_the_sd_familys_metrics_and_edits_only_what_it_names(
        tiny_sd3, demo_manifest, tmp_path, method, touched):
    report, changed, delta = unlearn(tiny_sd3, demo_manifest, "styles:dotted", method, tmp_path / "run")
    for side in ("before", "after"):
        assert list(report[side]) == ["ua", "ira", "cra", "ua_q8", "ua_q4", "ua_paraphrase"]
    assert changed <= set(delta.params)  # bit-identical outside the delta
    if isinstance(touched, set):
        assert changed == touched
    elif touched:
        assert changed and all(any(k in n for k in touched) for n in changed)


@pytest.mark.slow
def test_train_sd3_writes_a_loadable_sd3_folder_with_the_demo_classifiers(demo_manifest, tmp_path):
    out = tmp_path / "sd3"
    res = CliRunner().invoke(main, ["demo", "train-sd3", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0 and "generated images labelled right" in res.output, res.output
    parts = {"model_index.json", "transformer", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler",
             "classifier", "judge", "training.json"}
    assert parts <= {p.name for p in out.iterdir()}
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 2 and set(record["judge"]["generated_accuracy"]) == {"objects", "styles"}
    a = load_model(str(out))
    assert isinstance(a, Sd3Adapter) and a.max_sequence_length == 16 and a.vae is None


def test_the_demo_sd3_model_draws_prompts_its_judge_recognises():
    """The committed demo SD3-style model: its training record, and its judge labels ≥ 0.75 per axis right."""
    from razor.demo import DEMO_SD3

    record = json.loads((DEMO_SD3 / "training.json").read_text())
    assert min(record["judge"]["generated_accuracy"].values()) >= 0.75, record
    assert detect("demo-sd3").name == "sd3" and load_model("demo-sd3").family == "sd3"
