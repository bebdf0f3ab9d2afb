"""A registered VLM version's answers (its MLflow pyfunc `predict`): the generated answer to each
image and question."""

from __future__ import annotations

import pandas as pd
import torch

from razor.data import decode


def serving(adapter, sets) -> tuple[dict, pd.DataFrame]:
    """Nothing to configure; an input example: a held-out image with the concept axis's question."""
    m = sets.eval
    return {}, pd.DataFrame({"image": [m.image_bytes(m.rows[0])], "question": [adapter.questions[sets.axis]]})


@torch.no_grad()
def serve(adapter, frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Per row (columns `image`, encoded bytes, and `question`): `answer`, greedily generated."""
    pixels = torch.from_numpy(decode(frame["image"], adapter.preprocess))
    return pd.DataFrame({"answer": adapter.generate(pixels, [str(q) for q in frame["question"]])})
