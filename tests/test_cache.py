"""The frozen-model cache: stored and re-loaded, it gives the step search the same numbers as
running the whole model for every probe, so the delta is the same."""

import pytest
import torch

from razor.config import EditParams, RankParams
from razor.data import read_manifest
from razor.editing import Ranking, edit, rank
from razor.errors import RazorError
from razor.families.clip.adapter import load_clip
from razor.families.clip.cache import FrozenCache
from razor.families.clip.probe import ClipProbe as Probe
from razor.families.clip.task import ClipTask as Task


@pytest.mark.slow
def test_cached_and_uncached_step_search_give_the_same_delta(demo_manifest, tmp_path):
    adapter = load_clip("demo")
    task = Task.build(adapter, read_manifest(demo_manifest), "objects:star", forget_size=128, retain_size=256, eval_size=300)
    ranking = rank(task, RankParams())
    ranking.save(tmp_path)
    FrozenCache.build(task).save(tmp_path / "cache.safetensors", {})
    cache = FrozenCache.load(tmp_path / "cache.safetensors", task)
    p = EditParams(max_rounds=3)

    deltas = []
    for reuse in (True, False):
        base = {n: t.detach().clone() for n, t in adapter.parameters().items()}
        probe = Probe(task, cache if reuse else None, reuse=reuse)
        frozen = cache.frozen if reuse else task.frozen_outputs()
        result = edit(task, p, Ranking.load(tmp_path), probe, frozen, progress=False)
        deltas.append(result.delta)
        with torch.no_grad():
            for n, t in adapter.parameters().items():
                t.copy_(base[n])

    cached, full = deltas
    assert cached.meta["components"] == full.meta["components"] and cached.meta["components"]
    assert all(torch.equal(a, b) for a, b in zip(cached.values, full.values))


def test_a_cache_for_other_data_or_truncated_is_refused(demo_manifest, tmp_path):
    adapter = load_clip("demo")
    small = Task.build(adapter, read_manifest(demo_manifest), "objects:star", forget_size=32, retain_size=64, eval_size=50)
    FrozenCache.build(small).save(tmp_path / "c.safetensors", {})
    other = Task.build(adapter, read_manifest(demo_manifest), "objects:star", forget_size=32, retain_size=64, eval_size=80)
    with pytest.raises(RazorError, match="re-run the cache stage"):
        FrozenCache.load(tmp_path / "c.safetensors", other)
    data = (tmp_path / "c.safetensors").read_bytes()
    for name, broken in (("truncated", data[: len(data) // 2]), ("garbage", b"\x00" * 64), ("empty", b"")):
        (tmp_path / name).write_bytes(broken)
        with pytest.raises(RazorError, match="cannot be read.*re-run the cache stage"):
            FrozenCache.load(tmp_path / name, small)
