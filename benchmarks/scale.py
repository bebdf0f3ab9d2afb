"""How the cost of unlearning grows with model size and with the forget / retain sets (issue: real-size models).

Random-weight models of real architectures (`razor.architectures`): CLIP ViT-B/32 and ViT-L/14, an
SD-1.5-sized text encoder + UNet, SDXL-base and SD3-medium (no T5), LLaVA-1.5 and LLaVA-NeXT. On each, RAZOR (one pass: rank → cache → edit), SLUG and one epoch
of graddiff over the same forget and retain sets; then RAZOR on ViT-B/32 with growing sets. Each run
is its own process (peaks do not mix), with glibc's mmap threshold fixed so that resident memory
follows the live allocations. Prints a table of seconds per stage and peak memory, writes
scale.json and scale.png (cost against size).

    python benchmarks/scale.py                                  # CPU, every run (an hour or more on 2 cores)
    python benchmarks/scale.py --device cuda --dtype bf16       # a GPU node
    python benchmarks/scale.py --one clip-b32 --method razor    # one run, its JSON
    python benchmarks/scale.py --one sd-1.5 --method esd        # ESD-x's cost per step at SD-1.5 size
    python benchmarks/scale.py --archs llava-1.5,llava-next --methods razor,slug --sets-arch '' --device cuda --dtype bf16
                                                                # the VLM rows: 7-8 B parameters, a GPU node only
    python benchmarks/scale.py --archs sd3-medium,sdxl --methods razor --sets-arch '' --dtype bf16 --probes 0 \
        --out benchmarks/results/scale-sd --resume              # SD3-medium (2.9 B) and SDXL (3.5 B) on CPU in bf16,
                                                                # rank and cache only: the probe's 48 images of 10
                                                                # steps at SD3-medium size ran 20+ min on CPU unfinished;
                                                                # on a GPU node: --device cuda --sample-size 128 --probes 2

Random weights carry no concept, so RAZOR is measured as one round stage by stage — rank, cache,
the probe's first measurement of θ0 (each probe of the search draws the same images again), the top
component's step search (2 probes) — the cost of a pass, not of reaching a target. `--resume` keeps the
rows OUT/scale.json holds. The SD model samples at 64 px on CPU
(`--sample-size 8`, latents 8×8; SD-1.5's own is 64): parameter count is real, image size is not.
`results/scale/` holds the last CPU run (2 cores; SLUG on SD-1.5 was stopped after 25 minutes;
graddiff on SD-1.5 needs about 21 GiB — five times its weights and one batch — and is skipped
where that is not free).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from razor.config import DTYPES
from razor.io import atomic_path

CONCEPT = {"clip": "objects:star", "sd": "styles:dotted", "sdxl": "styles:dotted", "sd3": "styles:dotted",
           "vlm": "identities:hana"}
TOWERS = {"clip": ("vision", "text"), "sd": ("text", "xattn"), "sdxl": ("text", "text_2", "xattn"),
          "sd3": ("text", "text_2", "ctx"), "vlm": ("vision", "projector")}
ESD_STEPS = 10  # ESD-x (diffusion models only) is timed over this many steps: its cost per step
SWEEP = ((8, 16), (16, 32), (32, 64), (64, 128))  # (forget, retain) sizes for the set-size runs


def rss_mb() -> float:
    import psutil

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss / 2**20


def one(arch: str, method: str, forget: int, retain: int, batch: int, device: str, dtype: str, sample_size: int,
        checkpointing: bool, probes: int = 2) -> dict:
    """One run in this process: the model folder, the task, one batch's activations, the method."""
    import psutil
    import torch

    from razor.architectures import n_parameters, write
    from razor.config import EsdParams, RazorParams, SlugParams, TrainParams
    from razor.cost import measure
    from razor.data import read_manifest
    from razor.demo.dataset import demo_manifest
    from razor.families import build_task, load_model
    from razor.pipeline import run_method

    manifest = read_manifest(demo_manifest())
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(sample_size=sample_size) if arch.startswith("sd") else {}
        folder = write(arch, Path(tmp) / arch, **kw)
        base = rss_mb()
        t0 = time.perf_counter()
        adapter = load_model(str(folder), dtype, device)
        loaded = time.perf_counter() - t0
    fam = adapter.family
    weights = sum(p.numel() * p.element_size() for p in adapter.model.parameters()) / 2**20
    t0 = time.perf_counter()
    task = build_task(adapter, manifest, CONCEPT[fam], forget_size=forget, retain_size=retain, eval_size=16, batch_size=batch)
    task.checkpointing = checkpointing
    data = time.perf_counter() - t0
    ready = rss_mb() if device == "cpu" else torch.cuda.memory_allocated() / 2**20
    with measure() as act:  # the activations one batch keeps for its backward pass
        loss = task.retain_loss(next(task.retain.batches(batch)))
    activations = act.peak_mb - ready
    del loss
    ready = rss_mb()
    need = 5 * weights + activations  # graddiff: weights, their copy, grads and Adam's two moments (2 GiB to spare)
    if method == "graddiff" and device == "cpu" and need + 2048 > psutil.virtual_memory().available / 2**20:
        return dict(arch=arch, method=method, skipped=f"needs about {need / 1024:.0f} GiB, {device} has "
                    f"{psutil.virtual_memory().available / 2**30:.0f} GiB free")
    if method == "razor":
        with measure() as cost:
            timing = razor_pass(task, RazorParams(towers=TOWERS[fam], probes=max(1, probes)), probes)
    elif method == "esd":  # a few steps, then one probe: the cost of one step
        with measure() as cost:
            result = run_method(method, task, EsdParams(max_steps=ESD_STEPS, eval_every=10**6, batch_size=batch), progress=False)
        timing = dict(result.timing, **{"per step": result.timing["training"] / result.rounds[-1]["step"]})
    else:
        p = (SlugParams(towers=TOWERS[fam], probes=max(1, probes)) if method == "slug" else
             TrainParams(max_steps=math.ceil(len(task.forget) / batch), eval_every=10**6))  # graddiff: one epoch
        with measure() as cost:
            timing = run_method(method, task, p, progress=False).timing
    peak = cost.peak_mb - ready + weights if device == "cpu" else cost.peak_mb  # the pass's own peak, model included
    return dict(arch=arch, method=method, device=device, dtype=dtype, params_m=n_parameters(adapter) / 1e6,
                weights_mb=weights, forget=len(task.forget), retain=len(task.retain), batch=batch,
                activations_mb=activations, seconds=dict(load=loaded, data=data, **timing, total=cost.seconds),
                peak_mb=peak, baseline_mb=base)


def razor_pass(task, p, probes: int) -> dict:
    """One RAZOR round, stage by stage: rank (g_f, g_r, scores), cache (θ0's outputs), the probe's first
    measurement and the step search of the top-ranked component with `probes` probes (0: stop after the
    cache) — run even where a random model has nothing to forget, which would end the edit before its first step."""
    from razor.config import EditParams, RankParams
    from razor.editing import candidates, direction, rank, step_search
    from razor.families import of
    from razor.pipeline import build_cache

    timing = {}
    t0 = time.perf_counter()
    ranking = rank(task, p.part(RankParams))
    timing["gradients"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache = build_cache(task)
    timing["cache"] = time.perf_counter() - t0
    if not probes:
        return timing
    t0 = time.perf_counter()
    probe = of(task.adapter).probe(task, cache)
    timing["probe"] = time.perf_counter() - t0  # θ0's validation measures: what each probe of the search costs again
    c = candidates(task.adapter, p.towers, p.granularity)[ranking.selection[0]]
    d = direction(list(c.params), ranking.g_f, ranking.g_r, None, p.part(EditParams))
    ranking.g_f = ranking.g_r = {}  # as the edit does: the step search holds only d
    t0 = time.perf_counter()
    step_search(probe, c, task.adapter.parameters(), d, probe.current, p.part(EditParams))
    timing["step search"] = time.perf_counter() - t0
    return timing


def spawn(args, arch: str, method: str, forget: int, retain: int) -> dict:
    """`one` in a fresh process (its JSON on the last line of stdout)."""
    cmd = [sys.executable, __file__, "--one", arch, "--method", method, "--forget", str(forget), "--retain", str(retain),
           "--batch", str(args.batch), "--device", args.device, "--dtype", args.dtype, "--sample-size", str(args.sample_size), "--probes", str(args.probes)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd + (["--gradient-checkpointing"] if args.gradient_checkpointing else []), env=env,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{arch} {method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


HEADER = ("| model | method | params (M) | forget/retain | load s | gradients / cache / probe / step search s | total s | "
          "ms per M params | weights MB | one batch's activations MB | peak MB | peak / weights | "
          "(peak − activations) / weights |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def row(r: dict) -> str:
    if "skipped" in r:
        return f"| {r['arch']} | {r['method']} | skipped: {r['skipped']} |"
    s = r["seconds"]
    stages = " / ".join(f"{s[k]:.1f}" if k in s else "–" for k in ("gradients", "cache", "probe", "step search"))
    return (f"| {r['arch']} | {r['method']} | {r['params_m']:.0f} | {r['forget']}/{r['retain']} | {s['load']:.1f} | "
            f"{stages} | {s['total']:.1f} | {1e3 * s['total'] / r['params_m']:.0f} | {r['weights_mb']:.0f} | "
            f"{r['activations_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] / r['weights_mb']:.2f} | "
            f"{(r['peak_mb'] - r['activations_mb']) / r['weights_mb']:.2f} |")


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    runs = [r for r in runs if "skipped" not in r]
    by_size = [r for r in runs if r.get("sweep") == "size"]
    sets = sorted((r for r in runs if r.get("sweep") == "sets"), key=lambda r: r["forget"] + r["retain"])
    fig, axes = plt.subplots(1, 3 if sets else 2, figsize=(15 if sets else 10, 4.2))
    # each architecture is a point of its own (a line between CLIP and SD would suggest a trend across them)
    for method, marker in (("razor", "o"), ("slug", "s"), ("graddiff", "^")):
        rs = [r for r in by_size if r["method"] == method]
        if rs:
            axes[0].scatter([r["params_m"] for r in rs], [r["seconds"]["total"] for r in rs], marker=marker, label=method)
            axes[1].scatter([r["params_m"] for r in rs], [r["peak_mb"] / 1024 for r in rs], marker=marker, label=method)
    rs = list({r["arch"]: r for r in by_size}.values())
    axes[1].scatter([r["params_m"] for r in rs], [r["weights_mb"] / 1024 for r in rs], marker="_", s=300, c="k",
                    label="weights")
    for ax, y in ((axes[0], lambda r: r["seconds"]["total"]), (axes[1], lambda r: r["peak_mb"] / 1024)):
        for r in (r for r in by_size if r["method"] == "razor"):
            ax.annotate(r["arch"], (r["params_m"], y(r)), textcoords="offset points", xytext=(4, -12), fontsize=8)
    partial = any(r["method"] == "razor" and "step search" not in r["seconds"] for r in by_size)  # --probes 0
    axes[0].set(xlabel="parameters (M)", ylabel="seconds" + (" (rank + cache where no probe ran)" if partial else ""),
                title="time against model size", xscale="log", yscale="log")
    axes[1].set(xlabel="parameters (M)", ylabel="peak GiB", title="peak memory against model size", xscale="log", yscale="log")
    if sets:
        items = [r["forget"] + r["retain"] for r in sets]
        axes[2].plot(items, [r["seconds"].get("gradients", 0) for r in sets], "o-", label="gradients")
        axes[2].plot(items, [r["seconds"]["total"] for r in sets], "s-", label="whole pass")
        axes[2].set(xlabel="forget + retain items", ylabel="seconds", title=f"RAZOR on {sets[0]['arch']} against set size")
    for axis in (a for ax in axes[:2] for a in (ax.xaxis, ax.yaxis)):  # the log axes: 1-2-5 ticks in plain numbers
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"cost of one unlearning pass ({runs[0]['device']}, {runs[0]['dtype']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="clip-b32,clip-l14,sd-1.5")
    ap.add_argument("--methods", default="razor,slug,graddiff")
    ap.add_argument("--sets-arch", default="clip-b32", help="the architecture of the set-size sweep ('' skips it)")
    ap.add_argument("--forget", type=int, default=16)
    ap.add_argument("--retain", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=DTYPES)
    ap.add_argument("--sample-size", type=int, default=8, help="the SD UNet's latent size (SD-1.5: 64)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--probes", type=int, default=2, help="RAZOR's and SLUG's step-search probes (RAZOR: 0 stops after "
                    "the cache)")
    ap.add_argument("--out", default="benchmarks/results/scale")
    ap.add_argument("--one", help="run one architecture in this process and print its JSON")
    ap.add_argument("--method", default="razor")
    ap.add_argument("--report", action="store_true", help="print the table and redraw the plot of OUT/scale.json")
    ap.add_argument("--resume", action="store_true", help="keep the runs OUT/scale.json holds, run only the others")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.method, args.forget, args.retain, args.batch, args.device, args.dtype,
                             args.sample_size, args.gradient_checkpointing, args.probes)))
        return

    out = Path(args.out)
    if args.report:
        runs = json.loads((out / "scale.json").read_text())
        print(HEADER + "\n".join(row(r) for r in runs))
        plot(runs, out / "scale.png")
        return
    print(HEADER, end="", flush=True)
    todo = [("size", arch, method, args.forget, args.retain) for arch in filter(None, args.archs.split(","))
            for method in filter(None, args.methods.split(","))]
    todo += [("sets", args.sets_arch, "razor", f, r) for f, r in (SWEEP if args.sets_arch else ())]
    runs = json.loads((out / "scale.json").read_text()) if args.resume and (out / "scale.json").is_file() else []
    done = {(r["sweep"], r["arch"], r["method"], r.get("forget"), r.get("retain")) for r in runs}
    print("".join(row(r) + "\n" for r in runs), end="", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    for sweep, arch, method, forget, retain in todo:
        if (sweep, arch, method, forget, retain) in done:
            continue
        runs.append(dict(spawn(args, arch, method, forget, retain), sweep=sweep))
        print(row(runs[-1]), flush=True)
        with atomic_path(out / "scale.json") as tmp:  # what has run so far, should it be stopped
            tmp.write_text(json.dumps(runs, indent=2))
    plot(runs, out / "scale.png")
    print(f"\nwrote {out / 'scale.json'} and {out / 'scale.png'}")


if __name__ == "__main__":
    main()
