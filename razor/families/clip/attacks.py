"""CLIP's attacks (razor.attack): relearning (razor.relearn), a linear probe (razor.readout) of the
image embeddings, and membership inference (razor.membership) on each image's caption likelihood."""

from __future__ import annotations

import torch

from razor.config import AttackParams
from razor.families.clip import FAMILY
from razor.families.clip.zeroshot import fa1, image_embeddings
from razor.libquant import quant_lib_attack
from razor.membership import mia_attack
from razor.pairs import Pairs
from razor.readout import linear_probe
from razor.relearn import relearn_attacks


def image_probe(task, p: AttackParams) -> list[tuple[dict, float]]:
    """Can the concept still be read out of the image embeddings?"""
    return linear_probe(task, p, lambda pixels: image_embeddings(task.adapter, pixels), [task.concept_id])


def caption_likelihood(task, pairs: Pairs) -> torch.Tensor:
    """Each image's log-probability of its own caption among the set's distinct captions."""
    a = task.adapter
    pool = sorted(set(pairs.captions))
    texts = torch.cat([a.encode_texts(a.tokenize(pool[i:i + 256])) for i in range(0, len(pool), 256)])
    logits = (a.model.logit_scale.exp() * image_embeddings(a, pairs.pixels) @ texts.T).float().log_softmax(1)
    return logits[torch.arange(len(pairs)), torch.tensor([pool.index(c) for c in pairs.captions])]


def forget_fa1(task) -> float:
    return fa1(task, task.forget_test.pixels)


ATTACKS = relearn_attacks(forget_fa1, FAMILY.fixed) | {
    "linear_probe": image_probe, "mia": mia_attack(caption_likelihood, FAMILY.fixed),
    "quant_lib": quant_lib_attack(forget_fa1)}
