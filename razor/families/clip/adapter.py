"""CLIP adapter: loading (a transformers CLIP folder, or an OpenCLIP checkpoint: razor.families.clip.openclip),
encoding, the family's losses (METHOD.md §6) and its components."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as nnf
from transformers import AutoConfig, AutoTokenizer, CLIPConfig, CLIPModel

from razor.components import CLIP_BLOCK, Component, Tower, enumerate_components
from razor.demo import DEMO_CLIP
from razor.errors import ModelError
from razor.families.clip.openclip import Layout, is_openclip, load_openclip, write_openclip
from razor.models import check_finite, check_folder, from_pretrained, image_preprocess, loading, save_pretrained


def load_clip(spec: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> "ClipAdapter":
    """Load a CLIP model and tokenizer from `demo`, a local folder or a hub id (safetensors only), in the
    transformers layout or, where the folder has only open_clip_config.json, OpenCLIP's."""
    source = str(DEMO_CLIP) if spec == "demo" else spec
    if is_openclip(source):
        model, tokenizer, preprocess, layout = load_openclip(source, dtype, device)
        return ClipAdapter(model, tokenizer, preprocess, source, layout)
    folder = Path(source)
    if folder.exists():
        check_folder(folder)
    with loading("CLIP model", spec):
        kind = AutoConfig.from_pretrained(source).model_type
        if kind != "clip":
            raise ModelError(f"{spec!r} is a {kind!r} model, not CLIP; this adapter edits CLIP checkpoints")
        model = from_pretrained(CLIPModel, source, use_safetensors=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
    preprocess = image_preprocess(folder, model.config.vision_config.image_size)
    return ClipAdapter(model.to(device).eval(), tokenizer, preprocess, source)


def save_clip(adapter: "ClipAdapter", folder: Path) -> None:
    """A full model folder in the layout the model was loaded from (transformers, or OpenCLIP's)."""
    if adapter.layout is not None:
        write_openclip(adapter, folder)
    else:
        save_pretrained(adapter, folder)


class ClipAdapter:
    """A CLIPModel with its tokenizer, preprocessing and RAZOR's view of it; `layout`: the OpenCLIP
    checkpoint its weights are views of (None: its own parameter names are the checkpoint's)."""

    family = "clip"

    def __init__(self, model: CLIPModel, tokenizer, preprocess: dict, source: str = "", layout: Layout | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.source = source
        self.layout = layout
        check_finite(model)
        if not self.components("layer"):
            raise ModelError(
                "the model has no transformer blocks (0 encoder layers in both towers); "
                "RAZOR edits attention and MLP weights of transformer blocks"
            )

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.logit_scale.dtype

    def towers(self) -> list[Tower]:
        out = []
        for name, cfg, block in (
            ("vision", self.model.config.vision_config, "vision_model.encoder.layers.{}"),
            ("text", self.model.config.text_config, "text_model.encoder.layers.{}"),
        ):
            heads = cfg.num_attention_heads
            out.append(Tower(name, block, cfg.num_hidden_layers, heads, cfg.hidden_size // heads, CLIP_BLOCK))
        return out

    def components(self, granularity: str) -> list[Component]:
        return enumerate_components(self.towers(), granularity)

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def blocks(self) -> list[torch.nn.Module]:
        """The transformer blocks of both towers (what gradient checkpointing recomputes)."""
        return [self.model.get_submodule(t.block.format(i)) for t in self.towers() for i in range(t.n_layers)]

    # -- encoding ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        max_len = self.model.config.text_config.max_position_embeddings
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def encode_texts(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = self.model.text_model(**tokens).pooler_output
        return nnf.normalize(self.model.text_projection(pooled), dim=-1)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=pixels.to(self.device, self.dtype)).pooler_output
        return nnf.normalize(self.model.visual_projection(pooled), dim=-1)

    def vision_inputs(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The hidden states entering each vision block (for re-running only the edited part)."""
        vm = self.model.vision_model
        h = vm.pre_layrnorm(vm.embeddings(pixels.to(self.device, self.dtype)))
        states = []
        for block in vm.encoder.layers:
            states.append(h)
            h = block(h, None)
        return states

    def vision_block(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """The output of vision block `layer` for its input `hidden`."""
        return self.model.vision_model.encoder.layers[layer](hidden, None)

    def encode_images_from(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Image embeddings computed from the cached input of vision block `layer` onward."""
        vm = self.model.vision_model
        for block in vm.encoder.layers[layer:]:
            hidden = block(hidden, None)
        return nnf.normalize(self.model.visual_projection(vm.post_layernorm(hidden[:, 0, :])), dim=-1)

    # -- the family's losses (METHOD.md §6) --------------------------------------------------
    def forget_objective(self, pixels: torch.Tensor, texts: list[list[str | None]]) -> torch.Tensor:
        """F: mean 1 − cos(image, concept text) over forget images and the concept's wordings (grows as
        the concept is forgotten); `texts[w][i]` is wording w for image i (None: it has none)."""
        img = self.encode_images(pixels)
        terms = []
        for per_item in texts:
            has = [i for i, t in enumerate(per_item) if t is not None]
            if not has:
                continue
            unique = sorted({per_item[i] for i in has})
            txt = self.encode_texts(self.tokenize(unique))
            which = torch.tensor([unique.index(per_item[i]) for i in has], device=img.device)
            terms.append(1.0 - (img[has] * txt[which]).sum(1))
        return torch.cat(terms).mean()

    def retain_loss(self, pixels: torch.Tensor, captions: dict[str, torch.Tensor], positives: torch.Tensor) -> torch.Tensor:
        """R: symmetric InfoNCE on retain pairs; `positives[i, j]` marks caption j as describing image i."""
        img = self.encode_images(pixels)
        txt = self.encode_texts(captions)
        return contrastive_loss(self.model.logit_scale.exp() * img @ txt.T, positives)

    def drift_penalty(self, pixels: torch.Tensor, captions: dict[str, torch.Tensor], frozen: torch.Tensor) -> torch.Tensor:
        """M: mean squared change of the image–text similarity matrix of a retain batch vs θ0."""
        sim = self.encode_images(pixels) @ self.encode_texts(captions).T
        return ((sim - frozen) ** 2).mean()


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with every positive pair counted (repeated captions are not negatives)."""
    pos = positives.float()
    t_img = pos / pos.sum(1, keepdim=True).clamp_min(1)
    t_txt = pos.T / pos.T.sum(1, keepdim=True).clamp_min(1)
    loss_i = -(t_img * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(t_txt * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def demo_config(vocab_size: int, bos: int, eos: int, pad: int, image_size: int = 32) -> CLIPConfig:
    """The tiny CLIP the demo trains: width 128, 4 blocks, 4 heads, MLP 256 per tower."""
    text = dict(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=16, bos_token_id=bos, eos_token_id=eos,
                pad_token_id=pad)
    vision = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)
