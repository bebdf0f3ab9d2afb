"""A registered diffusion version's answers (its MLflow pyfunc `predict`): an image per prompt and
noise seed, drawn by the test protocol's sampler (DDIM steps, guidance scale)."""

from __future__ import annotations

import io

import pandas as pd
import torch
from PIL import Image

from razor.families.sd.metrics import GUIDANCE, PROMPT, STEPS


def serving(adapter, sets) -> tuple[dict, pd.DataFrame]:
    """The sampler's settings and an input example: the concept's first prompt with seed 0."""
    labels = sets.eval.labels()
    pick = {axis: sets.label if axis == sets.axis else labels[axis][0] for axis in ("styles", "objects")}
    return dict(steps=STEPS, guidance=GUIDANCE), pd.DataFrame({"prompt": [PROMPT.format(style=pick["styles"], object=pick["objects"])],
                                                               "seed": [0]})


@torch.no_grad()
def serve(adapter, frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Per row (columns `prompt` and `seed`): `image`, the drawn image as PNG bytes."""
    images = adapter.generate([str(p) for p in frame["prompt"]], [int(s) for s in frame["seed"]], config["steps"], config["guidance"])
    return pd.DataFrame({"image": [png(im) for im in images]})


def png(image: torch.Tensor) -> bytes:
    """A 3×H×W image in [-1, 1] as PNG bytes."""
    array = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()
