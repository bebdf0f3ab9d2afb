"""Prompt wordings per axis (a manifest's `razor.templates`): those the forget objective F optimises
over (`forget`) and held-out ones (`heldout`) that neither F nor the step search ever uses, only
the final metrics. In a wording `{}` is the label and `{axis}` the item's own label on another
axis: "a {} {objects}" words a dotted star's style as "a dotted star"."""

from __future__ import annotations

import string

KINDS = ("forget", "heldout")


def fields(template: str) -> tuple[str, ...]:
    """The other axes a wording names."""
    return tuple(f for _, f, _, _ in string.Formatter().parse(template) if f)


def slots(template: str) -> int:
    """How many `{}` (the label) a wording holds; -1 if it does not parse as a format string."""
    try:
        return sum(1 for _, f, _, _ in string.Formatter().parse(template) if f == "")
    except ValueError:
        return -1


def problem(templates, axes: tuple[str, ...]) -> str | None:
    """What is wrong with a `razor.templates` value, or None."""
    if not isinstance(templates, dict):
        return f"razor.templates must map axes to {{'forget': [...], 'heldout': [...]}}, not {templates!r}"
    for axis, kinds in templates.items():
        if axis not in axes:
            return f"razor.templates names axis {axis!r}, which the manifest does not have (axes: {', '.join(axes)})"
        if not isinstance(kinds, dict) or set(kinds) - set(KINDS):
            return f"razor.templates[{axis!r}] must hold only {' and '.join(KINDS)} lists, not {kinds!r}"
        for kind, wordings in kinds.items():
            if not isinstance(wordings, list) or not all(isinstance(w, str) for w in wordings):
                return f"razor.templates[{axis!r}][{kind!r}] must be a list of wordings, not {wordings!r}"
            for w in wordings:
                try:
                    named = fields(w)
                except ValueError as e:
                    return f"razor.templates wording {w!r} does not parse ({e})"
                if slots(w) != 1 or set(named) - set(axes) or axis in named:
                    return (f"razor.templates wording {w!r} must hold {{}} (the label) once and name only other axes "
                            f"({', '.join(a for a in axes if a != axis)}) as {{axis}}")
    return None


def wordings(templates: dict, prompts: dict[str, str], axis: str, kind: str) -> list[str]:
    """The axis's wordings of `kind`; F's default is the axis's label prompt alone, held-out: none."""
    given = templates.get(axis, {}).get(kind)
    return list(given) if given else ([prompts[axis]] if kind == "forget" else [])


def item_texts(template: str, label: str, pairs) -> list[str | None]:
    """The wording of `label` for each item of `pairs`, filled with the item's own labels on the
    other axes it names (None where the item has no label on one of them)."""
    named = fields(template)
    out = []
    for i in range(len(pairs)):
        ids = {a: int(pairs.label_ids[a][i]) for a in named}
        out.append(None if any(v < 0 for v in ids.values())
                   else template.format(label, **{a: pairs.labels[a][v] for a, v in ids.items()}))
    return out
