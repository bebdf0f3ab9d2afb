"""Stable Diffusion adapter: a diffusers SD 1.x/2.x folder (model_index.json + text_encoder/,
tokenizer/, unet/, scheduler/, vae/) or hub id, and the sampling loop RAZOR measures with.

Components: the text encoder's blocks and heads (tower "text", as CLIP's) and, selectable, the
UNet's cross-attention key/value projections (tower "xattn": `xattn.{site}.k|v`, and per head
the rows of both). Without a VAE (the demo model) the UNet works in pixel space on
pixel_unshuffle(image, f), f² = unet.in_channels / 3; with one, on the VAE's scaled latents.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as nnf
from huggingface_hub import hf_hub_download

from razor import memo
from razor.components import CLIP_BLOCK, Component, Slice, Tower, enumerate_components
from razor.errors import ModelError
from razor.models import check_weight_files, from_pretrained, loading

SUBFOLDERS = ("text_encoder", "tokenizer", "unet", "scheduler")
SLOT = "<*>"  # where a learned word embedding goes in a prompt (encode_slots)


def check_sd_folder(folder: Path) -> None:
    """An SD folder: model_index.json, the four parts, and safetensors weights (pickles refused)."""
    missing = [s for s in ("model_index.json", *SUBFOLDERS) if not (folder / s).exists()]
    if missing:
        raise ModelError(f"{folder} is not a Stable Diffusion folder (missing {', '.join(missing)}); "
                         "it needs model_index.json, text_encoder/, tokenizer/, unet/ and scheduler/")
    for part in ("text_encoder", "unet", *(["vae"] if (folder / "vae").is_dir() else [])):
        if not any((folder / part).glob("*.safetensors")):
            raise ModelError(f"{folder / part} has no .safetensors weights; convert the checkpoint to safetensors")
        check_weight_files(folder / part)


def load_sd(spec: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> "SdAdapter":
    """Load the text encoder, tokenizer, UNet, scheduler (and VAE, if any) of an SD folder or a hub id."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(spec)
    if folder.exists():
        check_sd_folder(folder)
    with loading("Stable Diffusion model", spec, "in the diffusers layout"):
        text = from_pretrained(CLIPTextModel, spec, subfolder="text_encoder", use_safetensors=True, dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(spec, subfolder="tokenizer")
        unet = from_pretrained(UNet2DConditionModel, spec, subfolder="unet", use_safetensors=True, torch_dtype=dtype,
                               low_cpu_mem_usage=False)
        scheduler = DDIMScheduler.from_pretrained(spec, subfolder="scheduler")
        has_vae = (folder / "vae").is_dir() if folder.exists() else _index(spec).get("vae", [None])[0] is not None
        vae = (from_pretrained(AutoencoderKL, spec, subfolder="vae", use_safetensors=True, torch_dtype=dtype)
               if has_vae else None)
    return SdAdapter(text.to(device).eval(), tokenizer, unet.to(device).eval(), scheduler,
                     vae.to(device).eval() if vae is not None else None, spec)


def save_sd(adapter: "SdAdapter", folder: Path) -> None:
    """The diffusers layout: model_index.json and one subfolder per part (safetensors), and the
    source folder's image classifiers (`classifier/`, `judge/`: razor.families.sd.classifier) if it has them."""
    import diffusers

    adapter.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    adapter.tokenizer.save_pretrained(folder / "tokenizer")
    adapter.unet.save_pretrained(folder / "unet", safe_serialization=True)
    adapter.scheduler.save_pretrained(folder / "scheduler")
    if adapter.vae is not None:
        adapter.vae.save_pretrained(folder / "vae", safe_serialization=True)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", type(adapter.scheduler).__name__],
             "vae": ["diffusers", "AutoencoderKL"] if adapter.vae is not None else [None, None],
             "safety_checker": [None, None], "feature_extractor": [None, None],
             "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    for part in ("classifier", "judge"):
        shipped = Path(adapter.source) / part
        if adapter.source and shipped.is_dir():
            shutil.copytree(shipped, folder / part)


def _index(spec: str) -> dict:
    return json.loads(Path(hf_hub_download(spec, "model_index.json")).read_text())


class SdAdapter:
    """A text encoder + UNet (the editable model, one ModuleDict) with tokenizer, scheduler and VAE."""

    family = "sd"
    layout = None  # deltas name its parameters (razor.delta)

    def __init__(self, text_encoder, tokenizer, unet, scheduler, vae=None, source: str = ""):
        self.model = torch.nn.ModuleDict(dict(text_encoder=text_encoder, unet=unet))
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.vae = vae
        self.source = source
        if vae is None and unet.config.in_channels % 3:
            raise ModelError(f"the UNet takes {unet.config.in_channels} channels and there is no VAE; "
                             "a pixel-space UNet takes 3·f² channels (pixel_unshuffle by f)")
        self.factor = 1 if vae is not None else math.isqrt(unet.config.in_channels // 3)
        scale = self.factor if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)
        self.preprocess = dict(size=unet.config.sample_size * scale, mean=(0.5,) * 3, std=(0.5,) * 3)  # → [-1, 1]

    @property
    def text_encoder(self):
        return self.model["text_encoder"]

    @property
    def unet(self):
        return self.model["unet"]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def blocks(self) -> list[torch.nn.Module]:
        """The text encoder's blocks and the UNet's down, mid and up blocks (what gradient checkpointing recomputes)."""
        u, (text,) = self.unet, self.towers()
        return [*(self.model.get_submodule(text.block.format(i)) for i in range(text.n_layers)), *u.down_blocks,
                *([u.mid_block] if u.mid_block else []), *u.up_blocks]

    def noised(self, x0: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, t, ε) for latents x0 with one fixed (t, ε) draw per seed (reproducible losses)."""
        n = self.scheduler.config.num_train_timesteps
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        t = torch.stack([torch.randint(n // 20, n - n // 20, (), generator=g) for g in gens]).to(self.device)
        eps = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(x0)
        return self.scheduler.add_noise(x0, eps, t), t, eps

    # -- the family's objectives (METHOD.md §6) ------------------------------------------------
    def forget_embedding(self, concept: list[str], frozen_concept: torch.Tensor, frozen_anchor: torch.Tensor) -> torch.Tensor:
        """F (embed): how far the concept prompts' text states moved from θ0's own toward θ0's states of
        the anchor prompts, cos(E, E0(anchor)) − cos(E, E0(concept)) per prompt (ours: the literal
        1 − cos(E, E0(concept)) has zero gradient at θ0, so nothing could be ranked)."""
        e = self.encode(concept).flatten(1)
        return (nnf.cosine_similarity(e, frozen_anchor.flatten(1)) - nnf.cosine_similarity(e, frozen_concept.flatten(1))).mean()

    def forget_noise(self, x_t: torch.Tensor, t: torch.Tensor, concept: list[str],
                     frozen_anchor_eps: torch.Tensor) -> torch.Tensor:
        """F (noise): −‖ε_θ(x_t, t, concept) − ε_θ0(x_t, t, anchor)‖², the gap toward the anchor's prediction."""
        return -((self.eps(x_t, t, self.encode(concept)) - frozen_anchor_eps) ** 2).mean()

    def retain_loss(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """R: the ε-prediction denoising loss on retain image–caption pairs."""
        return nnf.mse_loss(self.eps(x_t, t, self.encode(captions)), eps)

    def drift_penalty(self, x_t: torch.Tensor, t: torch.Tensor, neutral: list[str], frozen_eps: torch.Tensor) -> torch.Tensor:
        """M: the drift of the noise prediction on neutral prompts, ‖ε_θ − ε_θ0‖²."""
        return ((self.eps(x_t, t, self.encode(neutral)) - frozen_eps) ** 2).mean()

    # -- components ----------------------------------------------------------------------------
    def towers(self) -> list[Tower]:
        cfg = self.text_encoder.config
        heads = cfg.num_attention_heads
        return [Tower("text", "text_encoder.encoder.layers.{}", cfg.num_hidden_layers, heads, cfg.hidden_size // heads,
                      CLIP_BLOCK)]

    def cross_attention(self) -> list[tuple[str, torch.nn.Module]]:
        """The UNet's text cross-attention modules (`attn2`), in module order."""
        return [(f"unet.{n}", m) for n, m in self.unet.named_modules() if n.endswith("attn2")]

    def components(self, granularity: str) -> list[Component]:
        """Text blocks (and heads), then every cross-attention site's to_k / to_v (and heads)."""
        out = enumerate_components(self.towers(), granularity)
        for i, (name, attn) in enumerate(self.cross_attention()):
            k, v = f"{name}.to_k.weight", f"{name}.to_v.weight"
            if granularity in ("layer", "both"):
                out += [Component(f"xattn.{i}.{kind}", "xattn", i, kind, (Slice(p),)) for kind, p in (("k", k), ("v", v))]
            if granularity in ("head", "both"):
                d = attn.to_k.out_features // attn.heads
                out += [Component(f"xattn.{i}.head{h}", "xattn", i, "head", (Slice(k, 0, h * d, (h + 1) * d),
                                                                              Slice(v, 0, h * d, (h + 1) * d)))
                        for h in range(attn.heads)]
        return out

    # -- text and noise ------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """The text encoder's last hidden states of the prompts, padded to the tokenizer's length."""
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids).last_hidden_state

    def encode_slots(self, texts: list[str], words: torch.Tensor) -> torch.Tensor:
        """As `encode`, with learned word embeddings: each text's SLOT marks (k per text, in order) take
        the rows of `words` (N×k×D) in place of a token's embedding (the attacks' soft prompts)."""
        tok, n = self.tokenizer, self.tokenizer.model_max_length
        ids, slots = [], []
        for text in texts:
            row, mark = [tok.bos_token_id], [False]
            for i, piece in enumerate(text.split(SLOT)):
                if i:
                    row, mark = row + [tok.bos_token_id], mark + [True]  # any id: its embedding is replaced
                words_ids = tok(piece.strip(), add_special_tokens=False).input_ids if piece.strip() else []
                row, mark = row + words_ids, mark + [False] * len(words_ids)
            row, mark = row[:n - 1] + [tok.eos_token_id], mark[:n - 1] + [False]
            pad = n - len(row)
            ids.append(row + [tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id] * pad)
            slots.append(mark + [False] * pad)
        ids, slots = torch.tensor(ids, device=self.device), torch.tensor(slots, device=self.device)
        if int(slots.sum()) != words.shape[0] * words.shape[1]:
            raise ValueError(f"{int(slots.sum())} {SLOT} marks fit in {n} tokens; {tuple(words.shape[:2])} words were given")

        def put(module, inputs, out):
            out = out.clone()
            out[slots] = words.reshape(-1, words.shape[-1]).to(out)
            return out

        hook = self.text_encoder.get_input_embeddings().register_forward_hook(put)
        try:
            return self.text_encoder(ids).last_hidden_state
        finally:
            hook.remove()

    def eps(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction ε_θ(x_t, t, text)."""
        return self.unet(x, t, encoder_hidden_states=states).sample

    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → what the UNet denoises (scaled VAE latents, or unshuffled pixels)."""
        if self.vae is not None:
            return self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mean * self.vae.config.scaling_factor
        return nnf.pixel_unshuffle(images.to(self.device, self.dtype), self.factor)

    def from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_latents`: images in [-1, 1]."""
        if self.vae is not None:
            return self.vae.decode(z / self.vae.config.scaling_factor).sample.clamp(-1, 1)
        return nnf.pixel_shuffle(z, self.factor).clamp(-1, 1)

    def latent_shape(self) -> tuple[int, int, int]:
        s = self.unet.config.sample_size
        return (self.unet.config.in_channels, s, s)

    def noise(self, seeds: list[int]) -> torch.Tensor:
        """Initial latents: one fixed draw per seed (the same seed gives the same image)."""
        return torch.stack([torch.randn(self.latent_shape(), generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds]).to(self.device, self.dtype)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], steps: int = 20, guidance: float = 4.0,
                 batch_size: int = 128, remember: bool = False, states: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] (N×3×H×W) by DDIM with classifier-free guidance, one seed per prompt;
        `states`: the prompts' text states given (learned words: encode_slots) instead of encoded;
        `remember`: read each batch back from the output store (razor.memo) when these weights drew
        it before from the same text states and noise."""
        weights = memo.weights_key([self.unet] + ([self.vae] if self.vae is not None else [])) if remember else None
        out = []
        for s in range(0, len(prompts), batch_size):
            cond = self.encode(prompts[s:s + batch_size]) if states is None else states[s:s + batch_size]
            out.append(self._sample(cond, seeds[s:s + batch_size], steps, guidance, weights))
        return torch.cat(out)

    def _sample(self, cond: torch.Tensor, seeds: list[int], steps: int, guidance: float,
                weights: str | None = None) -> torch.Tensor:
        """One batch from its text states `cond`; `weights` (the UNet's and VAE's memo.weights_key;
        the text encoder is in the text states): read back from the output store when it was drawn before."""
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(steps)
        n = len(cond)
        cond, uncond = cond.detach(), self.encode([""] * n)
        z = self.noise(seeds) * sched.init_noise_sigma

        def denoise() -> torch.Tensor:
            x = z
            for t in sched.timesteps:
                tt = t.expand(n).to(self.device)
                e_c, e_u = self.eps(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, uncond])).chunk(2)
                x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
            return self.from_latents(x)

        if weights is None:
            return denoise()
        settings = dict(steps=steps, guidance=guidance, scheduler=dict(sched.config), factor=self.factor)
        return memo.remembered(memo.key(weights, [cond, uncond, z], settings), denoise, self.device)
