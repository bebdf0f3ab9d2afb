"""UnlearnCanvas metrics on generated images (METHOD.md §7).

For a concept c on axis A (styles or objects), B the other axis, every prompt "a {style} {object}"
is drawn with `seeds` fixed seeds (the same noise before and after an edit) and labelled by a
classifier that the edit cannot touch:
    UA  = 1 − share of c's images labelled c on A          (unlearning accuracy)
    IRA = share of the other A-labels' images right on A   (in-domain retain accuracy)
    CRA = share of the other A-labels' images right on B   (cross-domain retain accuracy)
and UA again with the model's Linear weights quantised to 8 and 4 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from razor.demo.sd import grid_pairs, prompts
from razor.quantize import quantized

AXES = ("styles", "objects")


@dataclass(frozen=True)
class Drawn:
    """Generated images with what they were asked for."""

    pairs: list[tuple[str, str]]  # (style, object) per image
    images: torch.Tensor
    said: dict[str, list[str]]  # axis → the classifier's label per image


def draw(adapter, classifier, seeds: int = 2, steps: int = 20, guidance: float = 4.0,
         only: tuple[str, str] | None = None) -> Drawn:
    """Every (style, object) prompt (`only`: those naming axis:label) drawn with `seeds` noise seeds
    of its own, fixed across models, so before and after see the same noise."""
    grid = grid_pairs()
    keep = [i for i, p in enumerate(grid) if only is None or p[AXES.index(only[0])] == only[1]]
    pairs = [grid[i] for i in keep for _ in range(seeds)]
    noise_seeds = [i * 1000 + k for i in keep for k in range(seeds)]
    images = adapter.generate(prompts(pairs), noise_seeds, steps, guidance)
    return Drawn(pairs, images, classifier(images))


def scores(drawn: Drawn, axis: str, label: str) -> dict[str, float]:
    """UA, IRA and CRA of the concept `axis:label` on drawn images."""
    if axis not in AXES:
        raise ValueError(f"UnlearnCanvas concepts are styles or objects, not {axis!r}")
    a = AXES.index(axis)
    b, other = 1 - a, AXES[1 - a]
    concept = [i for i, p in enumerate(drawn.pairs) if p[a] == label]
    rest = [i for i, p in enumerate(drawn.pairs) if p[a] != label]
    if not concept:
        raise ValueError(f"no prompt names {axis}:{label}")
    return dict(ua=1 - sum(drawn.said[axis][i] == label for i in concept) / len(concept),
                ira=sum(drawn.said[axis][i] == drawn.pairs[i][a] for i in rest) / len(rest),
                cra=sum(drawn.said[other][i] == drawn.pairs[i][b] for i in rest) / len(rest))


def evaluate(adapter, classifier, axis: str, label: str, seeds: int = 2, steps: int = 20, guidance: float = 4.0,
             bits: tuple[int, ...] = (8, 4)) -> tuple[dict[str, float], Drawn]:
    """`ua, ira, cra` and `ua_q{b}` for each of `bits`, and the full-precision images."""
    drawn = draw(adapter, classifier, seeds, steps, guidance)
    out = scores(drawn, axis, label)
    for b in bits:
        with quantized(adapter.model, b):
            concept = draw(adapter, classifier, seeds, steps, guidance, only=(axis, label))
        out[f"ua_q{b}"] = 1 - sum(s == label for s in concept.said[axis]) / len(concept.pairs)
    return out, drawn
