"""Stable Diffusion XL adapter: a diffusers SDXL folder (model_index.json + text_encoder/, text_encoder_2/,
tokenizer/, tokenizer_2/, unet/, scheduler/, vae/) or hub id.

What differs from SD-1.x: the UNet's cross-attention reads both text encoders' penultimate hidden
states side by side (CLIP ViT-L's and OpenCLIP bigG's: 768 + 1280 wide), and its added time embedding
(`addition_embed_type: text_time`) reads the second encoder's pooled, projected embedding and the
image's size and crop ("time ids"); the empty prompt of classifier-free guidance is zeros where the
pipeline says so (`force_zeros_for_empty_prompt`, SDXL's default).

Components: tower "text" (the first encoder's blocks but its last, which nothing reads), "text_2"
(the second's), and "xattn" as SD-1.x's (to_k / to_v read both encoders' states).

Text states (`encode`) carry the pooled embedding as one row after the tokens (zero-padded to their
width), so every part of the SD family that keeps, stacks, compares or guides with text states
handles SDXL's as they are; `eps` takes the row apart again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as nnf

from razor.components import Tower
from razor.errors import ModelError
from razor.families.sd.adapter import SdAdapter, _index, check_sd_folder, text_tower
from razor.models import from_pretrained, loading

SUBFOLDERS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")


def load_sdxl(spec: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> "SdxlAdapter":
    """Load both text encoders and tokenizers, the UNet, the scheduler (and the VAE) of an SDXL folder or hub id."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(spec)
    if folder.exists():
        check_sd_folder(folder, SUBFOLDERS, ("text_encoder", "text_encoder_2", "unet"), "Stable Diffusion XL")
    index = json.loads((folder / "model_index.json").read_text()) if folder.exists() else _index(spec)
    with loading("Stable Diffusion XL model", spec, "in the diffusers layout"):
        text = from_pretrained(CLIPTextModel, spec, subfolder="text_encoder", use_safetensors=True, dtype=dtype)
        text_2 = from_pretrained(CLIPTextModelWithProjection, spec, subfolder="text_encoder_2", use_safetensors=True,
                                 dtype=dtype)
        tokenizers = [CLIPTokenizer.from_pretrained(spec, subfolder=s) for s in ("tokenizer", "tokenizer_2")]
        unet = from_pretrained(UNet2DConditionModel, spec, subfolder="unet", use_safetensors=True, torch_dtype=dtype,
                               low_cpu_mem_usage=False)
        scheduler = DDIMScheduler.from_pretrained(spec, subfolder="scheduler")
        vae = (from_pretrained(AutoencoderKL, spec, subfolder="vae", use_safetensors=True, torch_dtype=dtype)
               if (index.get("vae") or [None])[0] else None)
    return SdxlAdapter(text.to(device).eval(), text_2.to(device).eval(), *tokenizers, unet.to(device).eval(), scheduler,
                       vae.to(device).eval() if vae is not None else None, spec,
                       zeros_for_empty=index.get("force_zeros_for_empty_prompt", True))


class SdxlAdapter(SdAdapter):
    """Two text encoders + UNet (the editable model) with both tokenizers, scheduler and VAE."""

    family = "sdxl"
    pipeline = "StableDiffusionXLPipeline"

    def __init__(self, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler, vae=None, source: str = "",
                 zeros_for_empty: bool = True):
        super().__init__(text_encoder, tokenizer, unet, scheduler, vae, source)
        self.model = torch.nn.ModuleDict(dict(text_encoder=text_encoder, text_encoder_2=text_encoder_2, unet=unet))
        self.tokenizer_2 = tokenizer_2
        self.zeros_for_empty = zeros_for_empty
        cfg = unet.config
        self.width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
        self.pooled = text_encoder_2.config.projection_dim
        if cfg.addition_embed_type != "text_time" or cfg.cross_attention_dim != self.width:
            raise ModelError(f"this UNet (addition_embed_type {cfg.addition_embed_type!r}, cross-attention "
                             f"{cfg.cross_attention_dim} wide) is not SDXL's: it takes addition_embed_type 'text_time' and "
                             f"cross-attention as wide as both text encoders ({self.width})")
        if cfg.projection_class_embeddings_input_dim != 6 * cfg.addition_time_embed_dim + self.pooled or self.pooled > self.width:
            raise ModelError(f"the UNet's added embedding takes {cfg.projection_class_embeddings_input_dim} inputs; "
                             f"SDXL's are 6 time ids × {cfg.addition_time_embed_dim} + the pooled text embedding "
                             f"({self.pooled}): the text encoders and the UNet come from different models")

    @property
    def text_encoder_2(self):
        return self.model["text_encoder_2"]

    def parts(self) -> dict[str, tuple[object, str]]:
        return dict(text_encoder=(self.text_encoder, "transformers"), text_encoder_2=(self.text_encoder_2, "transformers"),
                    tokenizer=(self.tokenizer, "transformers"), tokenizer_2=(self.tokenizer_2, "transformers"),
                    unet=(self.unet, "diffusers"), scheduler=(self.scheduler, "diffusers"), vae=(self.vae, "diffusers"))

    def settings(self) -> dict:
        return {"force_zeros_for_empty_prompt": self.zeros_for_empty}

    def towers(self) -> list[Tower]:
        """The first encoder's blocks but its last (whose output nothing reads: the UNet takes the penultimate
        states), the second's all (its last feeds the pooled embedding)."""
        return [text_tower("text", "text_encoder", self.text_encoder, self.text_encoder.config.num_hidden_layers - 1),
                text_tower("text_2", "text_encoder_2", self.text_encoder_2)]

    def encoders(self) -> list[tuple[torch.nn.Module, object]]:
        return [(self.text_encoder, self.tokenizer), (self.text_encoder_2, self.tokenizer_2)]

    def states(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Both encoders' penultimate hidden states side by side, then the pooled embedding as one more row."""
        one = self.text_encoder(ids[0], output_hidden_states=True)
        two = self.text_encoder_2(ids[1], output_hidden_states=True)
        tokens = torch.cat([one.hidden_states[-2], two.hidden_states[-2]], -1)
        pooled = nnf.pad(two.text_embeds, (0, self.width - self.pooled))
        return torch.cat([tokens, pooled[:, None]], 1)

    def token_states(self, prompts: list[str]) -> torch.Tensor:
        return self.encode(prompts)[:, :-1]

    def unconditional(self, n: int) -> torch.Tensor:
        """Zeros (tokens and pooled) where the pipeline forces them for an empty prompt, else the empty prompt's."""
        if not self.zeros_for_empty:
            return super().unconditional(n)
        return torch.zeros(n, self.tokenizer.model_max_length + 1, self.width, device=self.device,
                           dtype=self.text_encoder.dtype)

    def time_ids(self, n: int) -> torch.Tensor:
        """SDXL's size conditioning of an uncropped square image: original size, crop corner, target size."""
        size = self.preprocess["size"]
        return torch.tensor([size, size, 0, 0, size, size], device=self.device, dtype=self.dtype).expand(n, 6)

    def predict(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, denoiser=None) -> torch.Tensor:
        cond = dict(text_embeds=states[:, -1, :self.pooled], time_ids=self.time_ids(len(x)))
        return (denoiser or self.unet)(x, t, encoder_hidden_states=states[:, :-1], added_cond_kwargs=cond).sample
