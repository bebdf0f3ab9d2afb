"""Random-weight models of the real architectures — CLIP ViT-B/32 and ViT-L/14, Stable Diffusion 1.5,
XL (base 1.0) and 3 (medium, without T5), LLaVA-1.5, LLaVA-NeXT (the paper's LLaVA-1.6-8B) — built from their published configs and written as model folders (no download), so that
tests and `benchmarks/scale.py` run the real path at real size. `width` and `depth` (fractions)
shrink hidden sizes and layer counts for a quick check of the same layout; head counts stay.
The tokenizers are the demo world's (offline), whose ids fit the real vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from razor.demo import world
from razor.demo.tokenizer import build_tokenizer as world_tokenizer
from razor.demo.vlm import build_tokenizer as vlm_tokenizer
from razor.errors import ModelError
from razor.families.sd.adapter import SdAdapter, save_sd
from razor.families.sd3.adapter import T5_LENGTH, Sd3Adapter
from razor.families.sdxl.adapter import SdxlAdapter
from razor.io import atomic_dir

# (hidden, intermediate, layers, heads) of the text tower; vision adds the patch size; then the projection
CLIP = {
    "clip-b32": dict(text=(512, 2048, 12, 8), vision=(768, 3072, 12, 12, 32), projection=512),
    "clip-l14": dict(text=(768, 3072, 12, 12), vision=(1024, 4096, 24, 16, 14), projection=768),
}
ARCHITECTURES = (*CLIP, "sd-1.5", "sdxl", "sd3-medium", "llava-1.5", "llava-next")
CLIP_VOCAB = 49408


def _scaled(n: int, width: float, multiple: int) -> int:
    return max(multiple, round(n * width / multiple) * multiple)


def clip_config(name: str, image_size: int = 224, width: float = 1.0, depth: float = 1.0, tokenizer=None):
    """The CLIPConfig of `clip-b32` or `clip-l14` (OpenAI's sizes; the special token ids of `tokenizer`)."""
    from transformers import CLIPConfig

    if name not in CLIP:
        raise ModelError(f"no CLIP architecture {name!r}; choose one of {', '.join(CLIP)}")
    spec = CLIP[name]
    (th, ti, tl, tn), (vh, vi, vl, vn, patch) = spec["text"], spec["vision"]
    layers = lambda n: max(1, round(n * depth))  # noqa: E731
    text = dict(hidden_size=_scaled(th, width, tn), intermediate_size=_scaled(ti, width, tn), num_hidden_layers=layers(tl),
                num_attention_heads=tn, vocab_size=CLIP_VOCAB, max_position_embeddings=77, hidden_act="quick_gelu")
    if tokenizer is not None:
        text.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=_scaled(vh, width, vn), intermediate_size=_scaled(vi, width, vn), num_hidden_layers=layers(vl),
                  num_attention_heads=vn, patch_size=patch, image_size=image_size, hidden_act="quick_gelu")
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=_scaled(spec["projection"], width, 8))


def _tokenizer(max_length: int):
    return world_tokenizer(world.vocabulary(), model_max_length=max_length)


def write_clip(name: str, folder: str | Path, image_size: int = 224, width: float = 1.0, depth: float = 1.0,
               seed: int = 0) -> Path:
    """A random CLIP of the named architecture as a model folder (config, safetensors, tokenizer)."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer(16)
    model = CLIPModel(clip_config(name, image_size, width, depth, tokenizer))
    with atomic_dir(Path(folder), "model.safetensors") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(folder)


def _vae(width: float, depth: float, sample_size: int, scaling: float):
    """The SD / SDXL KL VAE (128/256/512/512 channels, factor 8)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=max(1, round(2 * depth)),
                         block_out_channels=tuple(_scaled(c, width, 32) for c in (128, 256, 512, 512)),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         sample_size=sample_size * 8, scaling_factor=scaling)


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False)


def sd_parts(tokenizer, sample_size: int = 64, width: float = 1.0, depth: float = 1.0, vae: bool = True):
    """(text encoder, UNet, VAE or None, scheduler) of SD-1.5's layout: the ViT-L/14 text tower, the
    860 M-parameter UNet (320/640/1280/1280 channels, cross-attention 768) and the KL VAE (factor 8)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    text = CLIPTextModel(clip_config("clip-l14", width=width, depth=depth, tokenizer=tokenizer).text_config)
    channels = tuple(_scaled(c, width, 32) for c in (320, 640, 1280, 1280))
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=max(1, round(2 * depth)),
                                block_out_channels=channels, cross_attention_dim=text.config.hidden_size, attention_head_dim=8)
    return text, unet, _vae(width, depth, sample_size, 0.18215) if vae else None, _scheduler()


def write_sd(folder: str | Path, sample_size: int = 64, width: float = 1.0, depth: float = 1.0, vae: bool = True,
             seed: int = 0) -> Path:
    """A random SD-1.5-layout pipeline as a diffusers folder (model_index.json, safetensors parts)."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer(77)
    text, unet, auto, scheduler = sd_parts(tokenizer, sample_size, width, depth, vae)
    with atomic_dir(Path(folder), "model_index.json") as tmp:
        save_sd(SdAdapter(text, tokenizer, unet, scheduler, auto), tmp)
    return Path(folder)


def sdxl_parts(tokenizer, sample_size: int = 128, width: float = 1.0, depth: float = 1.0):
    """(text encoder, text encoder 2, UNet, VAE, scheduler) of SDXL-base-1.0's layout: the ViT-L/14 text
    tower, OpenCLIP bigG's text tower with its projection (1280 wide, 32 layers, 20 heads), the 2.6 B-parameter
    UNet (320/640/1280 channels, 1/2/10 transformer layers, 5/10/20 heads of 64, cross-attention 2048,
    `text_time` added embedding) and the KL VAE (scaling 0.13025)."""
    import math

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    layers = lambda n: max(1, round(n * depth))  # noqa: E731
    text = CLIPTextModel(clip_config("clip-l14", width=width, depth=depth, tokenizer=tokenizer).text_config)
    big = CLIPTextConfig(hidden_size=_scaled(1280, width, 20), intermediate_size=_scaled(5120, width, 20),
                         num_hidden_layers=layers(32), num_attention_heads=20, projection_dim=_scaled(1280, width, 8),
                         vocab_size=CLIP_VOCAB, max_position_embeddings=77, hidden_act="gelu",
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    text_2 = CLIPTextModelWithProjection(big)
    heads, head_dim = (5, 10, 20), _scaled(64, width, 8)
    channels = tuple(h * head_dim for h in heads)
    time_dim = _scaled(256, width, 8)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=layers(2),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=channels,
        transformer_layers_per_block=tuple(layers(n) for n in (1, 2, 10)), attention_head_dim=heads,
        norm_num_groups=math.gcd(32, *channels), use_linear_projection=True,
        cross_attention_dim=text.config.hidden_size + big.hidden_size, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=6 * time_dim + big.projection_dim)
    return text, text_2, unet, _vae(width, depth, sample_size, 0.13025), _scheduler()


def write_sdxl(folder: str | Path, sample_size: int = 128, width: float = 1.0, depth: float = 1.0, seed: int = 0) -> Path:
    """A random SDXL-base-layout pipeline as a diffusers folder (model_index.json, safetensors parts)."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer(77)
    text, text_2, unet, auto, scheduler = sdxl_parts(tokenizer, sample_size, width, depth)
    with atomic_dir(Path(folder), "model_index.json") as tmp:
        save_sd(SdxlAdapter(text, text_2, tokenizer, tokenizer, unet, scheduler, auto), tmp)
    return Path(folder)


def sd3_parts(tokenizer, sample_size: int = 128, width: float = 1.0, depth: float = 1.0):
    """(text encoder, text encoder 2, MMDiT, VAE, scheduler) of SD3-medium's layout without T5: CLIP ViT-L/14's
    and OpenCLIP bigG's text towers with their projections, the 2 B-parameter `SD3Transformer2DModel` (24 blocks,
    24 heads of 64, context 4096 wide, pooled 2048, patch 2, 16 latent channels), the 16-channel KL VAE
    (scaling 1.5305, shift 0.0609) and the flow-matching Euler scheduler (shift 3)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    layers = lambda n: max(1, round(n * depth))  # noqa: E731
    ids = dict(vocab_size=CLIP_VOCAB, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    large = CLIPTextConfig(hidden_size=_scaled(768, width, 12), intermediate_size=_scaled(3072, width, 12),
                           num_hidden_layers=layers(12), num_attention_heads=12, projection_dim=_scaled(768, width, 12),
                           hidden_act="quick_gelu", **ids)
    big = CLIPTextConfig(hidden_size=_scaled(1280, width, 20), intermediate_size=_scaled(5120, width, 20),
                         num_hidden_layers=layers(32), num_attention_heads=20, projection_dim=_scaled(1280, width, 20),
                         hidden_act="gelu", **ids)
    heads, head_dim = 24, _scaled(64, width, 8)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=16, out_channels=16, num_layers=layers(24),
        attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=_scaled(4096, width, 8),
        caption_projection_dim=heads * head_dim, pooled_projection_dim=large.projection_dim + big.projection_dim,
        pos_embed_max_size=max(192, sample_size // 2))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=max(1, round(2 * depth)),
                        block_out_channels=tuple(_scaled(c, width, 32) for c in (128, 256, 512, 512)),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=sample_size * 8, scaling_factor=1.5305, shift_factor=0.0609,
                        use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return CLIPTextModelWithProjection(large), CLIPTextModelWithProjection(big), transformer, vae, scheduler


def write_sd3(folder: str | Path, sample_size: int = 128, width: float = 1.0, depth: float = 1.0, seed: int = 0,
              max_sequence_length: int = T5_LENGTH) -> Path:
    """A random SD3-medium-layout pipeline (no T5) as a diffusers folder (model_index.json, safetensors parts);
    `max_sequence_length` rows of zeros stand in T5's place in the context (fewer make a test's passes cheaper)."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer(77)
    text, text_2, transformer, vae, scheduler = sd3_parts(tokenizer, sample_size, width, depth)
    with atomic_dir(Path(folder), "model_index.json") as tmp:
        save_sd(Sd3Adapter(text, text_2, tokenizer, tokenizer, transformer, scheduler, vae,
                           max_sequence_length=max_sequence_length), tmp)
    return Path(folder)


def llava_config(tokenizer, image_size: int = 336, width: float = 1.0, depth: float = 1.0):
    """LLaVA-1.5-7B's layout: CLIP ViT-L/14-336 (features of the second-to-last block), a two-layer
    GELU projector, a Llama-2-7B language model (4096 hidden, 32 layers, 32 heads)."""
    from transformers import LlamaConfig, LlavaConfig

    vision = clip_config("clip-l14", image_size, width, depth).vision_config
    text = LlamaConfig(vocab_size=32064, hidden_size=_scaled(4096, width, 32), intermediate_size=_scaled(11008, width, 32),
                       num_hidden_layers=max(1, round(32 * depth)), num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                       image_seq_length=(image_size // vision.patch_size) ** 2, vision_feature_layer=-2,
                       vision_feature_select_strategy="default", projector_hidden_act="gelu")


def llava_next_config(tokenizer, image_size: int = 336, width: float = 1.0, depth: float = 1.0):
    """LLaVA-1.6-8B's layout (llama3-llava-next-8b): CLIP ViT-L/14-336 tiled over its five grid resolutions
    (1×2, 2×1, 2×2, 3×1, 1×3 tiles, with the whole image and a newline per row), a two-layer GELU projector,
    a Llama-3-8B language model (4096 hidden, 32 layers, 32 heads, 8 key-value heads, 128k words; `width`
    shrinks the vocabulary too, down to the tokenizer's)."""
    from transformers import LlamaConfig, LlavaNextConfig

    vision = clip_config("clip-l14", image_size, width, depth).vision_config
    text = LlamaConfig(vocab_size=max(len(tokenizer), _scaled(128256, width, 64)), hidden_size=_scaled(4096, width, 32),
                       intermediate_size=_scaled(14336, width, 32),
                       num_hidden_layers=max(1, round(32 * depth)), num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=8192, rope_theta=500000.0, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    grid = [[image_size * h, image_size * w] for h, w in ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))]
    return LlavaNextConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_grid_pinpoints=grid,
                           image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                           vision_feature_select_strategy="default", projector_hidden_act="gelu")


def write_llava(folder: str | Path, image_size: int = 336, width: float = 1.0, depth: float = 1.0, seed: int = 0,
                next: bool = False) -> Path:
    """A random LLaVA-1.5-layout (`next`: LLaVA-NeXT-layout) VLM as a model folder (with the demo VLM's
    word-level tokenizer)."""
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = vlm_tokenizer()
    model = (LlavaNextForConditionalGeneration(llava_next_config(tokenizer, image_size, width, depth)) if next else
             LlavaForConditionalGeneration(llava_config(tokenizer, image_size, width, depth)))
    with atomic_dir(Path(folder), "model.safetensors") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return Path(folder)


def write(name: str, folder: str | Path, **kw) -> Path:
    """The named architecture (one of ARCHITECTURES) as a random-weight model folder."""
    if name in CLIP:
        return write_clip(name, folder, **kw)
    if name == "sd-1.5":
        return write_sd(folder, **kw)
    if name == "sdxl":
        return write_sdxl(folder, **kw)
    if name == "sd3-medium":
        return write_sd3(folder, **kw)
    if name in ("llava-1.5", "llava-next"):
        return write_llava(folder, **kw, next=name == "llava-next")
    raise ModelError(f"no architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")


def n_parameters(adapter) -> int:
    """The editable model's parameter count."""
    return sum(p.numel() for p in adapter.model.parameters())
