"""RAZOR's view of a LLaVA-style VLM (`LlavaForConditionalGeneration`): components in the vision
tower (layers and heads) and, if asked, the multimodal projector; the family's F / R / M
(METHOD.md §6): cross-entropy of the concept answer (ascended), next-token loss on retain
question–answer pairs, logit drift on neutral questions.

A prompt is <bos> <image>×N question-tokens; the answer follows. `question_template` wraps the
question for checkpoints trained with a chat format (e.g. "USER: {} ASSISTANT:").
"""

from __future__ import annotations

import torch

from razor.adapters.clip import LAYER_TENSORS, check_finite
from razor.components import Component, Slice, Tower, enumerate_components
from razor.errors import ModelError


class LlavaAdapter:
    """A LlavaForConditionalGeneration with its tokenizer and preprocessing."""

    family = "vlm"

    def __init__(self, model, tokenizer, preprocess: dict, source: str = "", question_template: str = "{}",
                 projector: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.source = source
        self.question_template = question_template
        self.projector = projector
        check_finite(model)
        if not self.components("layer"):
            raise ModelError("the vision tower has no blocks the answers depend on; RAZOR edits its attention and MLP weights")

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
        return [Tower("vision", prefix + ".{}", self.used_vision_blocks(), heads, cfg.hidden_size // heads, LAYER_TENSORS)]

    def components(self, granularity: str) -> list[Component]:
        out = enumerate_components(self.towers(), granularity)
        if self.projector and granularity in ("layer", "both"):
            proj = self.model.model.multi_modal_projector
            prefix = next(n for n, m in self.model.named_modules() if m is proj)
            for i, name in enumerate(("linear_1", "linear_2")):
                out.append(Component(f"projector.{i}.{name}", "projector", i, name, (Slice(f"{prefix}.{name}.weight"),)))
        return out

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- prompts -----------------------------------------------------------------------------
    def inputs(self, questions: list[str], answers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Left-padded ids and mask of the prompts (+ answer + eos), and labels on the answer tokens only."""
        tok = self.tokenizer
        image = [self.model.config.image_token_index] * self.model.config.image_seq_length
        rows = []
        for i, q in enumerate(questions):
            prompt = [tok.bos_token_id, *image, *tok.encode(self.question_template.format(q), add_special_tokens=False)]
            tail = [] if answers is None else [*tok.encode(answers[i], add_special_tokens=False), tok.eos_token_id]
            rows.append((prompt + tail, len(prompt)))
        width = max(len(seq) for seq, _ in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100)
        for r, (seq, start) in enumerate(rows):
            pad = width - len(seq)
            ids[r, pad:] = torch.tensor(seq)
            mask[r, pad:] = 1
            labels[r, pad + start:] = torch.tensor(seq[start:], dtype=torch.long)
        out = dict(input_ids=ids, attention_mask=mask)
        return {k: v.to(self.device) for k, v in (out if answers is None else dict(out, labels=labels)).items()}

    def next_token_logits(self, pixels: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """Logits of the first answer token (after each prompt)."""
        return self.model(pixel_values=pixels.to(self.device), **self.inputs(questions), logits_to_keep=1).logits[:, -1]

    @torch.no_grad()
    def answers(self, pixels: torch.Tensor, questions: list[str], batch_size: int = 256) -> list[str]:
        """The greedy first answer word to each (image, question)."""
        out = []
        for s in range(0, len(questions), batch_size):
            logits = self.next_token_logits(pixels[s:s + batch_size], questions[s:s + batch_size])
            out += self.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
        return out

    # -- the family's losses (METHOD.md §6) --------------------------------------------------
    def answer_loss(self, pixels: torch.Tensor, questions: list[str], answers: list[str]) -> torch.Tensor:
        """Next-token cross-entropy of the answers (and their end token)."""
        return self.model(pixel_values=pixels.to(self.device), **self.inputs(questions, answers)).loss

    def forget_objective(self, pixels: torch.Tensor, questions: list[str], concept: str) -> torch.Tensor:
        """F: cross-entropy of the concept answer on forget items; grows as the concept is forgotten."""
        target = self.tokenizer.encode(concept, add_special_tokens=False)[0]
        logp = self.next_token_logits(pixels, questions).log_softmax(-1)
        return -logp[:, target].mean()

    def retain_loss(self, pixels: torch.Tensor, questions: list[str], answers: list[str]) -> torch.Tensor:
        """R: next-token loss on retain question–answer pairs."""
        return self.answer_loss(pixels, questions, answers)

    def drift_penalty(self, pixels: torch.Tensor, questions: list[str], frozen: torch.Tensor) -> torch.Tensor:
        """M: mean squared change of the answer-position log-probabilities vs θ0 on neutral questions."""
        return ((self.next_token_logits(pixels, questions).log_softmax(-1) - frozen) ** 2).mean()

    @torch.no_grad()
    def frozen_logits(self, pixels: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """θ0's answer-position log-probabilities (cache before editing)."""
        return self.next_token_logits(pixels, questions).log_softmax(-1)
