"""A registered CLIP version's answers (its MLflow pyfunc `predict`): each image's zero-shot label
on every axis of the request's data, with its probability."""

from __future__ import annotations

import pandas as pd
import torch

from razor.data import decode
from razor.families.clip.zeroshot import image_embeddings, label_embeddings


def serving(adapter, sets) -> tuple[dict, pd.DataFrame]:
    """What it answers in (the data's labels and label prompts per axis) and an input example (a held-out image)."""
    m = sets.eval
    return dict(labels=m.labels(), prompts={a: m.prompts[a] for a in m.axes}), pd.DataFrame({"image": [m.image_bytes(m.rows[0])]})


@torch.no_grad()
def serve(adapter, frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Per image (column `image`, encoded bytes): `<axis>` its top-1 label, `<axis>_score` that label's probability."""
    images = image_embeddings(adapter, torch.from_numpy(decode(frame["image"], adapter.preprocess)))
    scale = adapter.model.logit_scale.exp()
    out = {}
    for axis, labels in label_embeddings(adapter, config["labels"], config["prompts"]).items():
        top = (scale * images @ labels.T).float().softmax(1).max(1)
        out[axis] = [config["labels"][axis][i] for i in top.indices.tolist()]
        out[f"{axis}_score"] = top.values.tolist()
    return pd.DataFrame(out)
