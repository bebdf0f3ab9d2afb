"""CLIP's attacks (razor.attack): relearning (razor.relearn), and a linear probe (razor.readout) of
the image embeddings."""

from __future__ import annotations

from razor.config import AttackParams
from razor.families.clip import FAMILY
from razor.families.clip.zeroshot import fa1, image_embeddings
from razor.readout import linear_probe
from razor.relearn import relearn_attacks


def image_probe(task, p: AttackParams) -> list[tuple[dict, float]]:
    """Can the concept still be read out of the image embeddings?"""
    return linear_probe(task, p, lambda pixels: image_embeddings(task.adapter, pixels), [task.concept_id])


ATTACKS = relearn_attacks(lambda task: fa1(task, task.forget_test.pixels), FAMILY.fixed) | {"linear_probe": image_probe}
