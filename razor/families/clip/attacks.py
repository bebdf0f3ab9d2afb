"""CLIP's attacks (razor.attack): relearning (razor.relearn), and a linear probe of the image embeddings."""

from __future__ import annotations

import torch

from razor.config import AttackParams
from razor.errors import DataError
from razor.families.clip import FAMILY
from razor.families.clip.metrics import forget_and_utility
from razor.families.clip.zeroshot import image_embeddings
from razor.relearn import relearn_attacks


@torch.no_grad()
def linear_probe(task, p: AttackParams) -> list[tuple[dict, float]]:
    """Can the concept still be read out of the image embeddings? A logistic probe on the frozen
    embeddings, trained on `probe_shots` training items per label of the concept's axis; its ASR is
    the share of held-out forget items it labels the concept."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = task.forget.join(task.retain)
    ids = train.label_ids[task.axis]
    gen = torch.Generator().manual_seed(p.seed)
    picked = []
    for label in ids.unique().tolist():
        if label >= 0:
            have = (ids == label).nonzero().flatten()
            picked += have[torch.randperm(len(have), generator=gen)[: p.probe_shots]].tolist()
    y = ids[picked].numpy()
    if len(set(y.tolist())) < 2:
        raise DataError(f"linear_probe needs training items of at least two {task.axis} labels; the retain set has none "
                        "but the concept's (curate a retain set that carries other labels of this axis)")
    x = image_embeddings(task.adapter, train.pixels[picked]).float().cpu().numpy()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    said = probe.predict(image_embeddings(task.adapter, task.forget_test.pixels).float().cpu().numpy())
    return [(dict(shots_per_label=p.probe_shots, labels=len(set(y.tolist()))), float((said == task.concept_id).mean()))]


ATTACKS = relearn_attacks(lambda task: forget_and_utility(task)[0], FAMILY.fixed) | {"linear_probe": linear_probe}
