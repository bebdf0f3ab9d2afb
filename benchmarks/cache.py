"""What the frozen-model cache buys the edit stage: its step search with and without the cache.

For each request, the same ranking and the same edit params; once with the cache (probes
re-run only the edited part of the model), once with every probe running the whole model.
Prints seconds per phase, the ratio, and whether the two deltas are identical.
Usage: python benchmarks/cache.py [--requests objects:star,styles:dotted]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from razor.config import EditParams, RankParams
from razor.data import read_manifest
from razor.demo.dataset import demo_manifest
from razor.editing import edit, rank
from razor.families.clip.adapter import load_clip
from razor.families.clip.cache import FrozenCache
from razor.families.clip.probe import ClipProbe as Probe
from razor.families.clip.task import ClipTask as Task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", default="objects:star,styles:dotted")
    args = ap.parse_args()
    manifest = read_manifest(demo_manifest())
    print("| request | cache build s | step search s (cached) | step search s (whole model) | ratio | same delta |")
    print("|---|---|---|---|---|---|")
    for concept in args.requests.split(","):
        torch.manual_seed(0)
        adapter = load_clip("demo")
        task = Task.build(adapter, manifest, concept)
        ranking = rank(task, RankParams())
        t0 = time.perf_counter()
        cache = FrozenCache.build(task)
        built = time.perf_counter() - t0
        base = {n: t.detach().clone() for n, t in adapter.parameters().items()}
        runs = []
        for reuse in (True, False):
            probe = Probe(task, cache if reuse else None, reuse=reuse)
            frozen = cache.frozen if reuse else task.frozen_outputs()
            runs.append(edit(task, EditParams(), replace(ranking), probe, frozen, progress=False))  # edit empties its ranking
            with torch.no_grad():
                for n, t in adapter.parameters().items():
                    t.copy_(base[n])
        cached, full = (r.timing["step search"] for r in runs)
        same = runs[0].components == runs[1].components and all(
            torch.equal(a, b) for a, b in zip(runs[0].delta.values, runs[1].delta.values))
        print(f"| {concept} | {built:.2f} | {cached:.1f} | {full:.1f} | {full / cached:.2f}× | {same} |", flush=True)


if __name__ == "__main__":
    main()
