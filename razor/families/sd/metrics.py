"""UnlearnCanvas metrics on generated images (METHOD.md §7).

For a concept c on axis A (styles or objects), B the other axis, every prompt "a {style} {object}"
is drawn with fixed seeds (the same noise before and after an edit) and labelled by a classifier
that the edit cannot touch:
    UA  = 1 − share of c's images labelled c on A          (unlearning accuracy)
    IRA = share of the other A-labels' images right on A   (in-domain retain accuracy)
    CRA = share of the other A-labels' images right on B   (cross-domain retain accuracy)
and UA again with the model's Linear weights quantised to 8 and 4 bits, and on the concept's prompts
worded as the data's held-out wordings (`ua_paraphrase`: "a star drawn in dotted style"), which
neither F nor the step search uses. The final metrics are the judge's (SdTask.judge), not the
classifier the step search queried.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from razor.quantize import BITS, quantized
from razor.templates import fields

AXES = ("styles", "objects")
PROMPT = "a {style} {object}"
SEEDS, STEPS, GUIDANCE = 2, 20, 4.0  # the test protocol: noise seeds per prompt, DDIM steps, CFG scale


def grid(labels: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Every (style, object) pair of the labels."""
    return [(s, o) for s in labels["styles"] for o in labels["objects"]]


def prompts(pairs: list[tuple[str, str]]) -> list[str]:
    return [PROMPT.format(style=s, object=o) for s, o in pairs]


@dataclass(frozen=True)
class Drawn:
    """Generated images with what they were asked for."""

    pairs: list[tuple[str, str]]  # (style, object) per image
    images: torch.Tensor
    said: dict[str, list[str]]  # axis → the classifier's label per image


def draw(adapter, classifier, seeds: int = SEEDS, steps: int = STEPS, guidance: float = GUIDANCE,
         only: tuple[str, str] | None = None, wording: str = PROMPT, remember: bool = True) -> Drawn:
    """Every (style, object) prompt (`only`: those naming axis:label) drawn with `seeds` noise seeds
    of its own (1000·prompt + k), fixed across models, so before and after see the same noise; a
    version drawn before (by the evaluate stage, the gate) is read back from the output store.
    `wording`: another wording of `only`'s axis (razor.templates: `{}` its label, `{axis}` the other's);
    `remember`: False for weights drawn once (an attack's), which the store need not keep."""
    pairs_all = grid(classifier.labels)
    keep = [i for i, p in enumerate(pairs_all) if only is None or p[AXES.index(only[0])] == only[1]]
    pairs = [pairs_all[i] for i in keep for _ in range(seeds)]
    noise_seeds = [i * 1000 + k for i in keep for k in range(seeds)]
    texts = prompts(pairs) if wording == PROMPT else worded(pairs, only[0], wording)
    images = adapter.generate(texts, noise_seeds, steps, guidance, remember=remember)
    return Drawn(pairs, images, classifier(images))


def worded(pairs: list[tuple[str, str]], axis: str, wording: str) -> list[str]:
    """Each (style, object) pair in a wording of `axis` ("a {} drawn in {styles} style" for objects)."""
    a = AXES.index(axis)
    return [wording.format(p[a], **{AXES[1 - a]: p[1 - a]}) for p in pairs]


def scores(drawn: Drawn, axis: str, label: str, forgotten: tuple[tuple[str, str], ...] = ()) -> dict[str, float]:
    """UA, IRA and CRA of the concept `axis:label` on drawn images; IRA and CRA leave out the prompts that
    name a concept the model already `forgot` ((axis, label) pairs: a chain's earlier requests), whose
    loss is intended."""
    if axis not in AXES:
        raise ValueError(f"UnlearnCanvas concepts are styles or objects, not {axis!r}")
    a = AXES.index(axis)
    b, other = 1 - a, AXES[1 - a]
    concept = [i for i, p in enumerate(drawn.pairs) if p[a] == label]
    rest = others(drawn.pairs, axis, label, forgotten)
    if not concept:
        raise ValueError(f"no prompt names {axis}:{label}")
    return dict(ua=1 - sum(drawn.said[axis][i] == label for i in concept) / len(concept),
                ira=sum(drawn.said[axis][i] == drawn.pairs[i][a] for i in rest) / len(rest),
                cra=sum(drawn.said[other][i] == drawn.pairs[i][b] for i in rest) / len(rest))


def others(pairs: list[tuple[str, str]], axis: str, label: str, forgotten: tuple[tuple[str, str], ...] = ()) -> list[int]:
    """The prompts IRA and CRA count: those naming neither the concept nor a concept already forgotten."""
    return [i for i, p in enumerate(pairs) if p[AXES.index(axis)] != label
            and not any(p[AXES.index(fa)] == fl for fa, fl in forgotten if fa in AXES)]


def forgotten_of(task) -> tuple[tuple[str, str], ...]:
    """(axis, label) of each concept the task's model already forgot."""
    return tuple((a, task.labels[a][i]) for a, i in task.kept_ids())


def measure(adapter, classifier, axis: str, label: str, seeds: int = SEEDS, steps: int = STEPS,
            guidance: float = GUIDANCE, bits: tuple[int, ...] = BITS, wordings: tuple[str, ...] = (),
            forgotten: tuple[tuple[str, str], ...] = ()) -> tuple[dict[str, float], Drawn]:
    """`ua, ira, cra`, `ua_q{b}` for each of `bits` and `ua_paraphrase` (the mean UA over
    `wordings`, if any), and the full-precision images."""
    drawn = draw(adapter, classifier, seeds, steps, guidance)
    out = scores(drawn, axis, label, forgotten)

    def ua(**how) -> float:
        concept = draw(adapter, classifier, seeds, steps, guidance, only=(axis, label), **how)
        return 1 - sum(s == label for s in concept.said[axis]) / len(concept.pairs)

    for b in bits:
        with quantized(adapter.model, b):
            out[f"ua_q{b}"] = ua()
    if wordings:
        out["ua_paraphrase"] = sum(ua(wording=w) for w in wordings) / len(wordings)
    return out, drawn


# -- the family contract (razor.family) ------------------------------------------------------
def keys(bits=BITS) -> tuple[str, ...]:
    """The report's metric keys when re-checking under `bits`."""
    return ("ua", "ira", "cra") + tuple(f"ua_q{b}" for b in bits)


def evaluate(task, reference: Drawn | None = None, seed: int = 0, bits=BITS) -> tuple[dict, Drawn]:
    """Metrics of the model as it is now, labelled by the task's judge, and its drawn images
    (`reference`, `seed`: unused, the noise is fixed per prompt); "utility_per_axis" holds IRA and
    CRA under their axes' names."""
    heldout = tuple(w for w in task.wordings("heldout") if set(fields(w)) <= set(AXES))
    forgotten = forgotten_of(task)
    out, drawn = measure(task.adapter, task.judge, task.axis, task.label, bits=bits, wordings=heldout,
                         forgotten=forgotten)
    other = AXES[1 - AXES.index(task.axis)]
    out["utility_per_axis"] = {task.axis: out["ira"], other: out["cra"]}
    concept = sum(p[AXES.index(task.axis)] == task.label for p in drawn.pairs)
    rest = len(others(drawn.pairs, task.axis, task.label, forgotten))
    out["counts"] = dict(ua=concept, ira=rest, cra=rest)
    if heldout:
        out["counts"]["ua_paraphrase"] = concept * len(heldout)
    out["quantized"] = {str(b): dict(ua=out[f"ua_q{b}"]) for b in bits}
    return out, drawn


def forget_and_utility(task) -> tuple[float, float]:
    """The share of concept images the judge still labels the concept (1 − UA) and the mean of IRA and CRA."""
    out, _ = measure(task.adapter, task.judge, task.axis, task.label, bits=(), forgotten=forgotten_of(task))
    return 1 - out["ua"], (out["ira"] + out["cra"]) / 2


def figure(task, rows: dict[str, Drawn], path, per_side: int = 6) -> None:
    """The before/after image grid: the first seed of `per_side` concept prompts and as many others."""
    from razor.plots import image_grid

    first = next(iter(rows.values()))
    a = AXES.index(task.axis)
    seen, concept, other = set(), [], []
    for i, p in enumerate(first.pairs):
        if p not in seen:
            seen.add(p)
            (concept if p[a] == task.label else other).append(i)
    cols = concept[:per_side] + other[:: max(1, len(other) // per_side)][:per_side]
    image_grid(prompts([first.pairs[i] for i in cols]), {name: d.images[cols] for name, d in rows.items()}, path)
