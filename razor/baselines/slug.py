"""SLUG (Cai et al., ICML 2025): one layer from the Pareto front of (importance, |cos|),
edited along the forget gradient with a step found by bisection."""

from __future__ import annotations

import torch

from razor.config import SlugParams
from razor.delta import Delta
from razor.editing import EditResult, candidates, set_step, step_search
from razor.families import of
from razor.scoring import pareto_front, ratio_scores


def slug_edit(task, p: SlugParams, progress: bool = True) -> EditResult:
    adapter = task.adapter
    params = adapter.parameters()
    comps = candidates(adapter, p.towers, "layer")
    names = sorted({n for c in comps.values() for n in c.params})
    base = {n: params[n].detach().clone() for n in names}
    g_f, g_r = task.forget_gradient(names), task.retain_gradient(names)
    scores = ratio_scores(list(comps.values()), params, g_f, g_r, alpha=1.0, alignment="abs", normalize="none")
    probe = of(task.adapter).probe(task)
    m0 = probe.current
    tried = []
    for row in pareto_front(scores):
        c = comps[row["component"]]
        eta, m, _ = step_search(probe, c, params, g_f, m0, p)
        set_step(c, params, base, g_f, 0.0)
        tried.append(dict(component=c.name, eta=eta, fa_val=m.fa, retain_val=m.retain,
                          met=eta > 0 and m.fa <= p.goal))
    usable = [t for t in tried if t["eta"] > 0]
    if usable:
        best = max(usable, key=lambda t: (t["met"], t["retain_val"] if t["met"] else -t["fa_val"]))
        set_step(comps[best["component"]], params, base, g_f, best["eta"])
        edited = [best["component"]]
    else:
        edited = []
    for t in tried:
        t["chosen"] = t["component"] in edited
    with torch.no_grad():
        delta = Delta.from_edit(base, params, [comps[n] for n in edited],
                                meta=dict(method="slug", components=edited, base=adapter.source), layout=adapter.layout)
    return EditResult(delta, tried, scores, probes=dict(probe.counts))
