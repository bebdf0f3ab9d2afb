"""(ours) The retain-curvature step: a component's direction shaped by what its linear maps see on D_r.

A weight W (out × in) that moves by ΔW changes its output on a retain input x by ΔW·x, so the
drift penalty M grows, to second order, as tr(ΔW·C·ΔWᵀ) with C = E_r[x·xᵀ], the second moment of
W's inputs over the retain set. The step that buys the most forget gain ⟨d, ΔW⟩ for that drift is

    ΔW ∝ d·(C + δ·tr(C)/k·I)⁻¹           (k = in; δ: damping, relative to C's mean eigenvalue)

which is where the drift penalty's curvature, zero-gradient at θ0, enters the first step. It
moves W little along directions the retain inputs use and freely along those only the concept
uses (as UCE's and MEMIT's closed forms do, here applied to RAZOR's three-term direction).
Rows of a tensor (a head's q/k/v) share the whole C; a column block (a head's out projection)
uses C's matching block, since only those inputs meet it.
"""

from __future__ import annotations

import torch

from razor.components import Component
from razor.errors import ModelError


@torch.no_grad()
def retain_moments(task, names: list[str]) -> dict[str, torch.Tensor]:
    """C = E_r[x·xᵀ] of the inputs of each named Linear weight, over every token of one forward pass on D_r."""
    model = task.adapter.model
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    modules = {n: model.get_submodule(n.rsplit(".", 1)[0]) for n in names}

    def record(name: str):
        def hook(_module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
    try:
        for batch in task.retain.batches(task.batch_size):
            task.retain_loss(batch)
    finally:
        for h in hooks:
            h.remove()
    missing = [n for n in names if n not in sums]
    if missing:
        raise ModelError(f"the retain curvature needs Linear weights that D_r's forward pass reaches; "
                         f"{', '.join(missing)} are not (use precondition: none for them)")
    return {n: sums[n] / counts[n] for n in names}


def preconditioned(c: Component, d: dict[str, torch.Tensor], moments: dict[str, torch.Tensor],
                   damping: float) -> dict[str, torch.Tensor]:
    """The component's slices of the direction `d`, each right-multiplied by (C + δ·tr(C)/k·I)⁻¹."""
    out = {n: d[n].clone() for n in c.params}
    for s in c.slices:
        m = moments[s.param]
        if s.start is not None and s.dim == 1:
            m = m[s.start:s.stop, s.start:s.stop]
        k = m.shape[0]
        a = m + damping * m.trace() / k * torch.eye(k, dtype=m.dtype, device=m.device)
        block = s.index(out[s.param])
        block.copy_(torch.linalg.solve(a, block.double().T.to(a.device)).T.to(block))
    return out
