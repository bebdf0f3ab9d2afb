"""The linear-probe attack any family can run on features of its own (razor.attack): can the concept
still be read out of the edited model's internal features, with a few labelled items?"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from razor.config import AttackParams
from razor.errors import DataError


def linear_probe(task, p: AttackParams, features: Callable[[torch.Tensor], torch.Tensor],
                 targets: list[int]) -> list[tuple[dict, float]]:
    """A logistic probe on `features(pixels)` (N×D) of `probe_shots` training items per label of the
    concept's axis; its ASR: the share of held-out forget items it labels one of `targets` (label ids)."""
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
    with torch.no_grad():
        x, held = features(train.pixels[picked]), features(task.forget_test.pixels)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x.float().cpu().numpy(), y)
    said = probe.predict(held.float().cpu().numpy())
    return [(dict(shots_per_label=p.probe_shots, labels=len(set(y.tolist()))), float(np.isin(said, targets).mean()))]
