"""The VLM's attacks (razor.attack): relearning (razor.relearn), a linear probe of the features the
projector receives, the library quantisation formats (razor.libquant), and the concept's question
asked with no image (`text_question`). RAZOR edits only the vision tower and the projector: the
language model still holds whatever it knows of the concept's name."""

from __future__ import annotations

import torch

from razor.config import AttackParams
from razor.families.vlm.metrics import forget_accuracy
from razor.libquant import quant_lib_attack
from razor.readout import linear_probe
from razor.relearn import relearn_attacks


@torch.no_grad()
def projector_inputs(adapter, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """N×D: the vision features the projector reads (the configured layer, LLaVA's patch selection), mean-pooled."""
    cfg = adapter.model.config
    layer = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, int) else cfg.vision_feature_layer[-1]
    tower = adapter.model.model.vision_tower
    out = []
    for s in range(0, len(pixels), batch_size):
        x = pixels[s:s + batch_size].to(adapter.device, adapter.model.dtype)
        h = tower(x, output_hidden_states=True).hidden_states[layer]
        out.append((h[:, 1:] if cfg.vision_feature_select_strategy == "default" else h).mean(1).float().cpu())
    return torch.cat(out)


def projector_probe(task, p: AttackParams) -> list[tuple[dict, float]]:
    """Can the concept still be read out of what the projector receives?"""
    targets = [task.labels[task.axis].index(t) for t in task.targets]
    return linear_probe(task, p, lambda pixels: projector_inputs(task.adapter, pixels), targets)


@torch.no_grad()
def text_share(task) -> float:
    """The forgotten labels' share of the axis's answers when its question is asked with no image."""
    a = task.adapter
    prompt = [a.tokenizer.bos_token_id,
              *a.tokenizer.encode(a.question_template.format(a.questions[task.axis]), add_special_tokens=False)]
    logits = a.model(input_ids=torch.tensor([prompt], device=a.device), use_cache=False).logits[0, -1].float()
    labels = task.labels[task.axis]
    share = logits[[a.answer_token(lab) for lab in labels]].softmax(0)
    return float(sum(share[labels.index(t)] for t in task.targets))


def text_question(task, p: AttackParams) -> list[tuple[dict, float]]:
    """The language model alone, asked the concept's question: how much of its answer is the concept?"""
    return [(dict(question=task.adapter.questions[task.axis], image=False), text_share(task))]


text_question.note = ("text_question: the language model is never edited by RAZOR, so it answers a text-only "
                      "question as the base model does. What is forgotten is recognising the concept in an image; "
                      "the concept's name, and whatever the language model knows of it, stay.")

ATTACKS = relearn_attacks(forget_accuracy) | {"linear_probe": projector_probe, "quant_lib": quant_lib_attack(forget_accuracy),
                                              "text_question": text_question}
