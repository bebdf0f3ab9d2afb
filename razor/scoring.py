"""The ratio-aware score (METHOD.md §3) and the selection of the initial edit set."""

from __future__ import annotations

import torch

from razor.components import Component

SELECTIONS = ("topk", "threshold", "pareto")


def ratio_scores(components: list[Component], weights: dict, g_f: dict, g_r: dict, alpha: float,
                 alignment: str = "signed", normalize: str = "none", eps: float = 1e-8) -> list[dict]:
    """φ(c) = ‖g_f‖/(‖θ_c‖+ε) · (1 − cos(g_f, g_r))^α per component, as table rows.

    alignment "abs" uses |cos| (SLUG). normalize "tower" (ours) divides importance by its
    maximum within each tower so both towers compete on equal terms.
    """
    rows = []
    for c in components:
        gf, gr, w = c.flat(g_f), c.flat(g_r), c.flat(weights)
        importance = (gf.norm() / (w.norm() + eps)).item()
        cos = torch.nn.functional.cosine_similarity(gf, gr, dim=0, eps=eps).item()
        rows.append(dict(component=c.name, tower=c.tower, layer=c.layer, kind=c.kind,
                         importance=importance, cos=cos))
    top = {}
    for r in rows:
        top[r["tower"]] = max(top.get(r["tower"], 0.0), r["importance"])
    for r in rows:
        imp = r["importance"] / top[r["tower"]] if normalize == "tower" and top[r["tower"]] > 0 else r["importance"]
        conflict = abs(r["cos"]) if alignment == "abs" else r["cos"]
        r["score"] = imp * max(0.0, 1.0 - conflict) ** alpha
    return rows


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows not dominated in (high importance, low |cos|), SLUG's front."""
    front = []
    for r in rows:
        dominated = any(
            o["importance"] >= r["importance"] and abs(o["cos"]) <= abs(r["cos"])
            and (o["importance"] > r["importance"] or abs(o["cos"]) < abs(r["cos"]))
            for o in rows
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: -r["importance"])


def select(rows: list[dict], how: str = "topk", k: int = 1, tau: float | None = None) -> list[str]:
    """The initial edit set K: top k by φ, all with φ ≥ τ, or the Pareto front."""
    if how not in SELECTIONS:
        raise ValueError(f"select {how!r} is not one of {', '.join(SELECTIONS)}")
    ranked = sorted(rows, key=lambda r: -r["score"])
    if how == "topk":
        return [r["component"] for r in ranked[:k]]
    if how == "threshold":
        if tau is None:
            raise ValueError("select: threshold needs tau")
        return [r["component"] for r in ranked if r["score"] >= tau] or [ranked[0]["component"]]
    return [r["component"] for r in pareto_front(rows)]
