"""UCE (Gandikota et al., WACV 2024): a closed-form edit of every weight W that reads the text states
(the adapter's `text_maps`: a UNet's cross-attention to_k / to_v; an MMDiT's context and pooled
projections) so that the concept prompts' states c map to what their guides c* mapped to (v* = W0·c*),
while preserved prompts' states c_p keep their outputs:

    W = (λ·W0 + Σ v*·cᵀ + s_p·Σ W0·c_p·c_pᵀ) · (λ·I + Σ c·cᵀ + s_p·Σ c_p·c_pᵀ)⁻¹

Concept prompts: "a {style} {object}" for every pair carrying the concept; guides: the same pair
without it (the other axis's label prompt); preserved: every other pair's prompt. Token states are
taken from each prompt's last word to the end (as UCE does), trimmed to a common length; a weight
reading the pooled embedding reads one state per prompt."""

from __future__ import annotations

import time

import torch

from razor.config import UceParams
from razor.delta import Delta
from razor.editing import EditResult
from razor.families.sd.metrics import AXES, grid, prompts


def uce_edit(task, p: UceParams, progress: bool = True) -> EditResult:
    a = task.adapter
    t0 = time.perf_counter()
    i = AXES.index(task.axis)
    other = AXES[1 - i]
    pairs = grid(task.classifier.labels)
    erase = [q for q in pairs if q[i] == task.label]
    guides = [task.prompts[other].format(q[1 - i]) for q in erase]
    keep = prompts([q for q in pairs if q[i] != task.label]) + guides
    maps = a.text_maps()
    params = a.parameters()
    base = {n: params[n].detach().clone() for n in maps}
    with torch.no_grad():
        for reads in dict.fromkeys(maps.values()):
            old, new = zip(*[_aligned(a, c, g, reads) for c, g in zip(prompts(erase), guides)])
            kept = torch.cat([_aligned(a, k, k, reads)[0] for k in keep]).double()
            old, new = torch.cat(old).double(), torch.cat(new).double()
            eye = torch.eye(old.shape[1], dtype=torch.float64)
            for n in (n for n, r in maps.items() if r == reads):
                w0 = base[n].double()
                mat1 = p.lam * w0 + p.erase_scale * (new @ w0.T).T @ old + p.preserve_scale * (kept @ w0.T).T @ kept
                mat2 = p.lam * eye + p.erase_scale * old.T @ old + p.preserve_scale * kept.T @ kept
                params[n].copy_(torch.linalg.solve(mat2, mat1.T).T.to(params[n].dtype))
    delta = Delta.from_diff(base, {n: params[n] for n in maps}, meta=dict(method="uce", components=[], base=a.source))
    delta.meta["components"] = delta.params
    return EditResult(delta, [dict(erased=len(erase), preserved=len(keep), seconds=time.perf_counter() - t0)])


def _aligned(adapter, prompt: str, guide: str, reads: str = "tokens") -> tuple[torch.Tensor, torch.Tensor]:
    """What a text map reads of `prompt` and of `guide`: their pooled embeddings, or their token states from
    each one's last word to the end, trimmed to one length."""
    if reads == "pooled":
        pooled = adapter.pooled_states([prompt, guide])
        return pooled[:1], pooled[1:]
    tok = adapter.tokenizer([prompt, guide], padding="max_length", max_length=adapter.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    states = adapter.token_states([prompt, guide])
    last = (tok.attention_mask.sum(1) - 2).tolist()  # the last word, before the end token
    n = states.shape[1] - max(last)
    return states[0, last[0]:last[0] + n], states[1, last[1]:last[1] + n]
