"""A head-granularity edit changes only the chosen heads' rows and columns."""

import torch

from razor.config import RazorParams
from razor.data import read_manifest
from razor.families.clip.adapter import load_clip
from razor.families.clip.task import ClipTask as Task
from razor.pipeline import razor_edit


def test_head_edits_leave_every_other_slice_bit_identical(demo_manifest):
    adapter = load_clip("demo")
    base = {n: p.detach().clone() for n, p in adapter.parameters().items()}
    task = Task.build(adapter, read_manifest(demo_manifest), "styles:striped")
    result = razor_edit(task, RazorParams(granularity="head"), progress=False)
    assert result.components and all("head" in c for c in result.components)
    chosen = [c for c in adapter.components("head") if c.name in result.components]
    mask = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in base.items()}
    for c in chosen:
        for s in c.slices:
            s.index(mask[s.param]).fill_(True)
    params = adapter.parameters()
    for n, p in params.items():
        bits, base_bits = p.detach().view(torch.int32), base[n].view(torch.int32)
        assert torch.equal(bits[~mask[n]], base_bits[~mask[n]]), n  # untouched elsewhere, bit for bit
    assert any(not torch.equal(params[n], base[n]) for n in mask if mask[n].any())
