"""RAZOR's view of a LLaVA-style VLM (`LlavaForConditionalGeneration`, or LLaVA-NeXT's
`LlavaNextForConditionalGeneration` with its any-resolution tiling): components in the vision
tower (layers and heads) and the multimodal projector (tower "projector", selectable through
`towers`); the family's F / R / M (METHOD.md §6): cross-entropy of the concept answer
(ascended, as log-odds), next-token loss on retain question–answer pairs, drift of the answer-word
log-probabilities on neutral questions.

A prompt is <bos> <image>×N question-tokens; the answer follows (N: the config's image_seq_length,
or for LLaVA-NeXT the length of its packed features: the whole image, the grid's tiles unpadded,
a newline per row). `question_template` wraps the question for checkpoints trained with a chat
format (e.g. "USER: {} ASSISTANT:"); `questions` holds the question asked for each label axis (the
one F, R, M, the step search and FA use) and `heldout` other wordings of it, asked only by the final
metrics (`fa_paraphrase`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as nnf
from transformers import AutoTokenizer, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration
from transformers.image_processing_utils import select_best_resolution

from razor import memo
from razor.components import CLIP_BLOCK, Component, Slice, Tower, enumerate_components
from razor.errors import ModelError
from razor.model_config import config_files
from razor.models import check_finite, check_folder, from_pretrained, image_preprocess, loading

MODELS = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}  # by model_type

QUESTIONS = {"identities": "who is this ?", "objects": "what shape is this ?", "styles": "what style is this drawn in ?"}
HELDOUT = {"identities": ("whose face is shown here ?", "which person is in the picture ?"),
           "objects": ("which shape is shown here ?", "what form does the picture show ?"),
           "styles": ("which style is shown here ?", "how is the picture drawn ?")}


def load_llava(spec: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> "LlavaAdapter":
    """A LLaVA-style model (LLaVA-1.5 or LLaVA-NeXT) and its tokenizer from a local folder or a hub id (safetensors only)."""
    folder = Path(spec)
    if folder.exists():
        check_folder(folder)
    kind = config_files(spec)["config.json"].get("model_type")
    with loading("VLM", spec):
        model = from_pretrained(MODELS[kind], spec, use_safetensors=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(spec)
    preprocess = image_preprocess(folder, model.config.vision_config.image_size)
    return LlavaAdapter(model.to(device).eval(), tokenizer, preprocess, spec)


def names(answer: str, label: str) -> bool:
    """Whether a generated answer names `label` (case-insensitive, as a whole word)."""
    return re.search(rf"(?<!\w){re.escape(label)}(?!\w)", answer, re.IGNORECASE) is not None


class LlavaAdapter:
    """A LlavaForConditionalGeneration (or LlavaNextForConditionalGeneration) with its tokenizer and preprocessing."""

    family = "vlm"
    layout = None  # deltas name its parameters (razor.delta)

    def __init__(self, model, tokenizer, preprocess: dict, source: str = "", question_template: str = "{}",
                 questions: dict[str, str] | None = None, heldout: dict[str, tuple[str, ...]] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.source = source
        self.question_template = question_template
        self.questions = dict(questions or QUESTIONS)
        self.heldout = dict(HELDOUT if heldout is None else heldout)
        check_finite(model)
        if not self.components("layer"):
            raise ModelError("the vision tower has no blocks the answers depend on; RAZOR edits its attention and MLP weights")
        self.anyres = model.config.model_type == "llava_next"
        self.image_tokens = model.config.image_seq_length
        if self.anyres:  # the packed features' length, the same for every image of the preprocessing's size
            with torch.no_grad():
                blank = torch.zeros(1, 3, preprocess["size"], preprocess["size"], device=self.device, dtype=model.dtype)
                self.image_tokens = self.image_features(blank).shape[1]

    # -- components (METHOD.md §1) -----------------------------------------------------------
    def used_vision_blocks(self) -> int:
        """Blocks up to the vision feature layer the projector reads (LLaVA reads the second-to-last)."""
        cfg = self.model.config
        n = cfg.vision_config.num_hidden_layers
        layers = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, list) else [cfg.vision_feature_layer]
        return max(n + 1 + fl if fl < 0 else fl for fl in layers)

    def towers(self) -> list[Tower]:
        vision = self.model.model.vision_tower
        blocks = getattr(vision, "vision_model", vision).encoder.layers
        prefix = next(n for n, m in self.model.named_modules() if m is blocks)
        cfg = self.model.config.vision_config
        heads = cfg.num_attention_heads
        return [Tower("vision", prefix + ".{}", self.used_vision_blocks(), heads, cfg.hidden_size // heads, CLIP_BLOCK)]

    def components(self, granularity: str) -> list[Component]:
        """Vision blocks (and heads), then the projector's two linear layers (tower "projector")."""
        out = enumerate_components(self.towers(), granularity)
        if granularity in ("layer", "both"):
            proj = self.model.model.multi_modal_projector
            prefix = next(n for n, m in self.model.named_modules() if m is proj)
            for i, name in enumerate(("linear_1", "linear_2")):
                out.append(Component(f"projector.{i}.{name}", "projector", i, name, (Slice(f"{prefix}.{name}.weight"),)))
        return out

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def blocks(self) -> list[torch.nn.Module]:
        """The vision tower's and the language model's blocks (what gradient checkpointing recomputes)."""
        vision = self.model.model.vision_tower
        return [*getattr(vision, "vision_model", vision).encoder.layers, *self.model.model.language_model.layers]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- prompts -----------------------------------------------------------------------------
    def inputs(self, questions: list[str], answers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Left-padded ids and mask of the prompts (+ answer + eos), and labels on the answer tokens only."""
        tok = self.tokenizer
        image = [self.model.config.image_token_index] * self.image_tokens
        rows = []
        for i, q in enumerate(questions):
            prompt = [tok.bos_token_id, *image, *tok.encode(self.question_template.format(q), add_special_tokens=False)]
            tail = [] if answers is None else [*tok.encode(answers[i], add_special_tokens=False), tok.eos_token_id]
            rows.append((prompt + tail, len(prompt)))
        width = max(len(seq) for seq, _ in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.full((len(rows), width), pad)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100)
        for r, (seq, start) in enumerate(rows):
            left = width - len(seq)
            ids[r, left:] = torch.tensor(seq)
            mask[r, left:] = 1
            labels[r, left + start:] = torch.tensor(seq[start:], dtype=torch.long)
        out = dict(input_ids=ids, attention_mask=mask)
        return {k: v.to(self.device) for k, v in (out if answers is None else dict(out, labels=labels)).items()}

    def answer_token(self, answer: str) -> int:
        """The first token of an answer (what the next-token measurements score)."""
        return self.tokenizer.encode(answer, add_special_tokens=False)[0]

    def next_token_logits(self, pixels: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """Logits of the first answer token (after each prompt)."""
        return self.forward(pixels, self.inputs(questions), logits_to_keep=1).logits[:, -1].float()

    def forward(self, pixels: torch.Tensor, inputs: dict[str, torch.Tensor], **kw):
        """The model on (image, prompt) rows; consecutive rows of one image (a retain item asked every
        question) share one pass through the vision tower and the projector."""
        pixels = pixels.to(self.device, self.model.dtype)
        images, row_image = torch.unique_consecutive(pixels.flatten(1), dim=0, return_inverse=True)
        if len(images) == len(pixels) and not self.anyres:
            return self.model(pixel_values=pixels, **inputs, use_cache=False, **kw)
        features = self.image_features(images.view(-1, *pixels.shape[1:]))[row_image]
        ids = inputs["input_ids"]
        embeds = self.model.get_input_embeddings()(ids)
        embeds = embeds.masked_scatter((ids == self.model.config.image_token_index).unsqueeze(-1), features.to(embeds.dtype))
        return self.model(inputs_embeds=embeds, **{k: v for k, v in inputs.items() if k != "input_ids"}, use_cache=False, **kw)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """N×T×D: what the projector gives the language model for each image (LLaVA-NeXT: packed from its tiles)."""
        extra = {}
        if self.anyres:
            pixels, sizes = self.tiles(pixels)
            extra = dict(image_sizes=sizes)
        return torch.stack(list(self.model.model.get_image_features(pixel_values=pixels, **extra).pooler_output))

    def tiles(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LLaVA-NeXT's any-resolution input of square normalised images (N×3×S×S), as its image processor
        makes it: the image resized into the grid resolution that fits it best (aspect kept, black padding
        centred), cut into tiles of the vision tower's size, after the whole image at that size —
        N×(1+tiles)×3×s×s — and each image's size. (The processor resamples the raw image; this resamples
        the normalised one where S is not a tile size.)"""
        cfg = self.model.config
        n, _, size, _ = pixels.shape
        s = cfg.vision_config.image_size
        height, width = select_best_resolution((size, size), cfg.image_grid_pinpoints)
        scale = min(height / size, width / size)
        new_h, new_w = (min(math.ceil(size * scale), height), width) if width / size < height / size else \
            (height, min(math.ceil(size * scale), width))
        resized = pixels if (new_h, new_w) == (size, size) else nnf.interpolate(pixels, (new_h, new_w), mode="bicubic")
        mean = torch.tensor(self.preprocess["mean"], dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess["std"], dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        canvas = (-mean / std).expand(n, 3, height, width).clone()  # black, normalised
        top, left = (height - new_h) // 2, (width - new_w) // 2
        canvas[:, :, top:top + new_h, left:left + new_w] = resized
        grid = canvas.unfold(2, s, s).unfold(3, s, s).permute(0, 2, 3, 1, 4, 5).reshape(n, -1, 3, s, s)  # row by row
        whole = pixels if size == s else nnf.interpolate(pixels, (s, s), mode="bicubic")
        return torch.cat([whole[:, None], grid], 1), torch.tensor([[size, size]] * n, device=pixels.device)

    @torch.no_grad()
    def answers(self, pixels: torch.Tensor, questions: list[str], batch_size: int = 256) -> list[str]:
        """The greedy first answer token to each (image, question)."""
        out = []
        for s in range(0, len(questions), batch_size):
            logits = self.next_token_logits(pixels[s:s + batch_size], questions[s:s + batch_size])
            out += self.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
        return out

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor, questions: list[str], max_new_tokens: int = 8,
                 batch_size: int = 256, remember: bool = False) -> list[str]:
        """Greedy generated answers (decoded, special tokens dropped); `remember`: read each batch
        back from the output store (razor.memo) when these weights answered it before."""
        out = []
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        weights = memo.weights_key([self.model]) if remember else None
        for s in range(0, len(questions), batch_size):
            inputs = self.inputs(questions[s:s + batch_size])
            pix = pixels[s:s + batch_size].to(self.device, self.model.dtype)

            def answer() -> torch.Tensor:
                images = dict(zip(("pixel_values", "image_sizes"), self.tiles(pix))) if self.anyres else dict(pixel_values=pix)
                return self.model.generate(**images, **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=pad)

            if weights is None:
                ids = answer()
            else:
                settings = dict(max_new_tokens=max_new_tokens, pad=pad)
                ids = memo.remembered(memo.key(weights, [pix, *inputs.values()], settings), answer, self.device)
            out += tok.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [a.strip() for a in out]

    # -- the family's losses (METHOD.md §6) --------------------------------------------------
    def answer_loss(self, pixels: torch.Tensor, questions: list[str], answers: list[str]) -> torch.Tensor:
        """Next-token cross-entropy of the answers (and their end token). The answers end every (left-padded)
        row, so the language model's head runs only on the positions that predict them, not on the image's
        and question's (with a large vocabulary, most of the memory and time otherwise)."""
        inputs = self.inputs(questions, answers)
        labels = inputs.pop("labels")
        first = int((labels != -100).any(0).nonzero()[0])
        logits = self.forward(pixels, inputs, logits_to_keep=labels.shape[1] - first + 1).logits[:, :-1]
        return nnf.cross_entropy(logits.flatten(0, 1).float(), labels[:, first:].flatten(), ignore_index=-100)

    def forget_objective(self, pixels: torch.Tensor, questions: list[str], targets: list[str]) -> torch.Tensor:
        """F: the cross-entropy of the concept answer, ascended, in its log-odds form −log(P/(1−P)), P the
        probability that the answer names one of `targets` (ours: the plain cross-entropy's gradient is
        scaled by 1−P, which vanishes on the confidently answered items a forget set is made of)."""
        tokens = torch.tensor(sorted({self.answer_token(t) for t in targets}), device=self.device)
        p = self.next_token_logits(pixels, questions).softmax(-1)[:, tokens].sum(1).clamp(1e-6, 1 - 1e-6)
        return -(p.log() - torch.log1p(-p)).mean()

    def retain_loss(self, pixels: torch.Tensor, questions: list[str], answers: list[str]) -> torch.Tensor:
        """R: next-token loss on retain question–answer pairs."""
        return self.answer_loss(pixels, questions, answers)

    def drift_penalty(self, pixels: torch.Tensor, questions: list[str], frozen: torch.Tensor,
                      tokens: list[int]) -> torch.Tensor:
        """M: mean squared change, vs θ0, of the log-probabilities of the answer words `tokens` on neutral questions."""
        return ((self.next_token_logits(pixels, questions).log_softmax(-1)[:, tokens] - frozen) ** 2).mean()

    @torch.no_grad()
    def frozen_logits(self, pixels: torch.Tensor, questions: list[str], tokens: list[int]) -> torch.Tensor:
        """θ0's log-probabilities of the answer words (cache before editing)."""
        return self.next_token_logits(pixels, questions).log_softmax(-1)[:, tokens]
