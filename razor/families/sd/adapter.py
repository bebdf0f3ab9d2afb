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


def check_sd_folder(folder: Path, parts: tuple[str, ...] = SUBFOLDERS, weighted: tuple[str, ...] = ("text_encoder", "unet"),
                    kind: str = "Stable Diffusion") -> None:
    """A diffusers folder: model_index.json, its parts, and safetensors weights (pickles refused)."""
    missing = [s for s in ("model_index.json", *parts) if not (folder / s).exists()]
    if missing:
        raise ModelError(f"{folder} is not a {kind} folder (missing {', '.join(missing)}); "
                         f"it needs model_index.json, {', '.join(p + '/' for p in parts)}")
    for part in (*weighted, *(["vae"] if (folder / "vae").is_dir() else [])):
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

    index = {"_class_name": adapter.pipeline, "_diffusers_version": diffusers.__version__}
    for name, (part, library) in adapter.parts().items():
        if part is not None:
            part.save_pretrained(folder / name, **({"safe_serialization": True} if isinstance(part, torch.nn.Module) else {}))
        index[name] = [library, type(part).__name__] if part is not None else [None, None]
    (folder / "model_index.json").write_text(json.dumps(index | adapter.settings(), indent=2))
    for part in ("classifier", "judge"):
        shipped = Path(adapter.source) / part
        if adapter.source and shipped.is_dir():
            shutil.copytree(shipped, folder / part)


def text_tower(name: str, key: str, encoder, n_layers: int | None = None) -> Tower:
    """The tower of a CLIP text encoder held at `key` of the editable model: its first `n_layers`
    blocks (default: all), those whose output the UNet reads."""
    cfg = encoder.config
    layers = next(n for n, _ in encoder.named_modules() if n.endswith("encoder.layers"))
    return Tower(name, f"{key}.{layers}.{{}}", cfg.num_hidden_layers if n_layers is None else n_layers,
                 cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, CLIP_BLOCK)


def _slotted(tok, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of texts holding SLOT marks (any id stands at a mark) and where the marks are."""
    n = tok.model_max_length
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, slots = [], []
    for text in texts:
        row, mark = [tok.bos_token_id], [False]
        for i, piece in enumerate(text.split(SLOT)):
            if i:
                row, mark = row + [tok.bos_token_id], mark + [True]  # any id: its embedding is replaced
            words_ids = tok(piece.strip(), add_special_tokens=False).input_ids if piece.strip() else []
            row, mark = row + words_ids, mark + [False] * len(words_ids)
        row, mark = row[:n - 1] + [tok.eos_token_id], mark[:n - 1] + [False]
        ids.append(row + [pad] * (n - len(row)))
        slots.append(mark + [False] * (n - len(mark)))
    return torch.tensor(ids, device=device), torch.tensor(slots, device=device)


def _index(spec: str) -> dict:
    return json.loads(Path(hf_hub_download(spec, "model_index.json")).read_text())


class SdAdapter:
    """A text encoder + UNet (the editable model, one ModuleDict) with tokenizer, scheduler and VAE."""

    family = "sd"
    layout = None  # deltas name its parameters (razor.delta)
    denoiser_key = "unet"  # where the denoiser is in the editable model (and its pipeline folder)
    probe_draws = 2  # the step search's val draws per concept prompt (razor.families.sd.probe)

    def __init__(self, text_encoder, tokenizer, unet, scheduler, vae=None, source: str = ""):
        self.model = torch.nn.ModuleDict({"text_encoder": text_encoder, self.denoiser_key: unet})
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

    pipeline = "StableDiffusionPipeline"  # model_index.json's _class_name

    def parts(self) -> dict[str, tuple[object, str]]:
        """The pipeline's parts by subfolder (None where it has none) and the library each comes from."""
        return dict(text_encoder=(self.text_encoder, "transformers"), tokenizer=(self.tokenizer, "transformers"),
                    unet=(self.unet, "diffusers"), scheduler=(self.scheduler, "diffusers"), vae=(self.vae, "diffusers"),
                    safety_checker=(None, None), feature_extractor=(None, None))

    def settings(self) -> dict:
        """model_index.json's pipeline settings."""
        return {"requires_safety_checker": False}

    @property
    def text_encoder(self):
        return self.model["text_encoder"]

    @property
    def denoiser(self):
        """What predicts the noise (or the flow's velocity) from the noised latents and the text states."""
        return self.model[self.denoiser_key]

    @property
    def unet(self):
        return self.denoiser

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def blocks(self) -> list[torch.nn.Module]:
        """The text encoders' blocks and the UNet's down, mid and up blocks (what gradient checkpointing recomputes)."""
        u = self.unet
        return [*(self.model.get_submodule(text.block.format(i)) for text in self.towers() for i in range(text.n_layers)),
                *u.down_blocks, *([u.mid_block] if u.mid_block else []), *u.up_blocks]

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
        return -((self.predict(x_t, t, self.encode(concept)) - frozen_anchor_eps) ** 2).mean()

    def retain_loss(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """R: the ε-prediction denoising loss on retain image–caption pairs."""
        return nnf.mse_loss(self.predict(x_t, t, self.encode(captions)), eps)

    def drift_penalty(self, x_t: torch.Tensor, t: torch.Tensor, neutral: list[str], frozen_eps: torch.Tensor) -> torch.Tensor:
        """M: the drift of the noise prediction on neutral prompts, ‖ε_θ − ε_θ0‖²."""
        return ((self.predict(x_t, t, self.encode(neutral)) - frozen_eps) ** 2).mean()

    # -- components ----------------------------------------------------------------------------
    def towers(self) -> list[Tower]:
        return [text_tower("text", "text_encoder", self.text_encoder)]

    def text_attention(self) -> list[str]:
        """The parameters of the denoiser's attention to the text (what ESD-x tunes): the UNet's `attn2`."""
        return [n for n in self.parameters() if ".attn2." in n]

    def text_maps(self) -> dict[str, str]:
        """The weights that read the text states directly, each with what it reads ("tokens": one state per
        token; "pooled": one per prompt): UCE's closed-form edit. Here every cross-attention's to_k / to_v."""
        return {f"{n}.{proj}.weight": "tokens" for n, _ in self.cross_attention() for proj in ("to_k", "to_v")}

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
    def encoders(self) -> list[tuple[torch.nn.Module, object]]:
        """(text encoder, its tokenizer), in the order their states are read."""
        return [(self.text_encoder, self.tokenizer)]

    def states(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """The text states the UNet reads, from each encoder's token ids: the last hidden states."""
        return self.text_encoder(ids[0]).last_hidden_state

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """The prompts' text states (`states`), padded to the tokenizer's length."""
        return self.states([tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                                return_tensors="pt").input_ids.to(self.device) for _, tok in self.encoders()])

    def token_states(self, prompts: list[str]) -> torch.Tensor:
        """One state per token of each prompt, what the cross-attention's to_k / to_v read (UCE)."""
        return self.encode(prompts)

    def unconditional(self, n: int) -> torch.Tensor:
        """The text states classifier-free guidance steers away from: the empty prompt's."""
        return self.encode([""] * n)

    def word_embeddings(self) -> torch.Tensor:
        """The input word embeddings (vocabulary × width; several encoders' side by side): what a learned
        word of `encode_slots` is one row of."""
        tables = [enc.get_input_embeddings().weight.detach() for enc, _ in self.encoders()]
        if len({len(t) for t in tables}) > 1:
            raise ModelError(f"the text encoders' vocabularies differ ({', '.join(str(len(t)) for t in tables)} words); "
                             "learned words need one vocabulary")
        return torch.cat(tables, -1)

    def encode_slots(self, texts: list[str], words: torch.Tensor) -> torch.Tensor:
        """As `encode`, with learned word embeddings: each text's SLOT marks (k per text, in order) take
        the rows of `words` (N×k×D, D the width of `word_embeddings`: each encoder its own columns) in
        place of a token's embedding (the attacks' soft prompts)."""
        marked = [_slotted(tok, texts, self.device) for _, tok in self.encoders()]
        if any(int(slots.sum()) != words.shape[0] * words.shape[1] for _, slots in marked):
            raise ValueError(f"{int(marked[0][1].sum())} {SLOT} marks fit in the tokenizers' lengths; "
                             f"{tuple(words.shape[:2])} words were given")
        widths = [enc.get_input_embeddings().embedding_dim for enc, _ in self.encoders()]

        def put(slots, rows):
            def hook(module, inputs, out):
                out = out.clone()
                out[slots] = rows.reshape(-1, rows.shape[-1]).to(out)
                return out
            return hook

        hooks = [enc.get_input_embeddings().register_forward_hook(put(slots, rows))
                 for (enc, _), (_, slots), rows in zip(self.encoders(), marked, words.split(widths, -1))]
        try:
            return self.states([ids for ids, _ in marked])
        finally:
            for h in hooks:
                h.remove()

    def predict(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, denoiser=None) -> torch.Tensor:
        """The noise prediction ε_θ(x_t, t, text) of the UNet (or of `denoiser`, a copy of it: ESD's frozen one)."""
        return (denoiser or self.unet)(x, t, encoder_hidden_states=states).sample

    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → what the UNet denoises (scaled VAE latents, or unshuffled pixels)."""
        if self.vae is not None:
            z = self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mean
            return (z - (self.vae.config.get("shift_factor") or 0)) * self.vae.config.scaling_factor
        return nnf.pixel_unshuffle(images.to(self.device, self.dtype), self.factor)

    def from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_latents`: images in [-1, 1]."""
        if self.vae is not None:
            z = z / self.vae.config.scaling_factor + (self.vae.config.get("shift_factor") or 0)
            return self.vae.decode(z).sample.clamp(-1, 1)
        return nnf.pixel_shuffle(z, self.factor).clamp(-1, 1)

    def latent_shape(self) -> tuple[int, int, int]:
        s = self.denoiser.config.sample_size
        return (self.denoiser.config.in_channels, s, s)

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
        weights = memo.weights_key([self.denoiser] + ([self.vae] if self.vae is not None else [])) if remember else None
        out = []
        for s in range(0, len(prompts), batch_size):
            cond = self.encode(prompts[s:s + batch_size]) if states is None else states[s:s + batch_size]
            out.append(self._sample(cond, seeds[s:s + batch_size], steps, guidance, weights))
        return torch.cat(out)

    def sampler(self, steps: int):
        """A fresh scheduler set to `steps` sampling steps: DDIM from the model's noise schedule."""
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(steps)
        return sched

    def _sample(self, cond: torch.Tensor, seeds: list[int], steps: int, guidance: float,
                weights: str | None = None) -> torch.Tensor:
        """One batch from its text states `cond`; `weights` (the UNet's and VAE's memo.weights_key;
        the text encoder is in the text states): read back from the output store when it was drawn before."""
        sched = self.sampler(steps)
        n = len(cond)
        cond, uncond = cond.detach(), self.unconditional(n)
        z = self.noise(seeds) * getattr(sched, "init_noise_sigma", 1.0)

        def denoise() -> torch.Tensor:
            x = z
            for t in sched.timesteps:
                tt = t.expand(n).to(self.device)
                e_c, e_u = self.predict(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, uncond])).chunk(2)
                x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
            return self.from_latents(x)

        if weights is None:
            return denoise()
        settings = dict(steps=steps, guidance=guidance, scheduler=dict(sched.config), factor=self.factor)
        return memo.remembered(memo.key(weights, [cond, uncond, z], settings), denoise, self.device)
