"""RAZOR, SLUG, ESD-x and UCE on the demo diffusion model: the demo style and object requests.

Prints one table (UA, IRA, CRA before→after, UA after 4-bit and under held-out wordings, seconds,
peak MB, delta KB, edited tensors or components), every figure by the model's judge (judge/, not
the classifier the step searches queried). Each run is its own `razor unlearn --model demo-sd
--json` process, so peak MB is that process's resident memory (model, classifiers and data
included). RAZOR runs with the params of the committed request (`data/requests/demo-sd-*.yaml`);
SLUG with those of them it has (towers, probes, search, retain tolerance: the same step-search
budget); ESD-x and UCE run with their defaults.
Every run's report goes to benchmarks/results/sd_demo/sd_demo.json, and a plot of the table beside it
(`--report FILE` redraws both from the reports of an earlier run without running anything).
Usage: python benchmarks/sd_demo.py [--methods razor,esd] [--requests styles:noisy,...] [--json FILE] [--report FILE]
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from runs import run_table

from razor.config import SlugParams
from razor.io import atomic_path

REQUESTS = {"styles:noisy": "demo-sd-style-noisy", "objects:star": "demo-sd-object-star"}
METHODS = ["razor", "slug", "esd", "uce"]
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "sd_demo"


def params(request: str, method: str) -> list[str]:
    """The committed request's params for RAZOR, those SLUG has for SLUG; nothing for the others."""
    name = REQUESTS.get(request)
    if name is None or method not in ("razor", "slug"):
        return []
    given = yaml.safe_load((ROOT / "data" / "requests" / f"{name}.yaml").read_text())["params"]
    keep = given if method == "razor" else {k: v for k, v in given.items() if k in SlugParams.model_fields}
    return [f"{k}={json.dumps(v)}" for k, v in keep.items()]


def row(r: dict) -> list[str]:
    a, b = r["after"], r["before"]
    return [f"{b['ua']:.2f}→{a['ua']:.2f}", f"{b['ira']:.2f}→{a['ira']:.2f}", f"{b['cra']:.2f}→{a['cra']:.2f}",
            f"{a['ua_q4']:.2f}", f"{b['ua_paraphrase']:.2f}→{a['ua_paraphrase']:.2f}", f"{r['seconds']:.1f}",
            f"{r['peak_mb']:.0f}", f"{r['delta_bytes'] / 1024:.0f}", str(len(r["components"]))]


def plot(reports: list[dict], path: Path) -> None:
    """Per request: UA, IRA, CRA, UA after 4-bit and under held-out wordings of every method (the base
    model's as a line), and seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requests = list(dict.fromkeys(r["forget"] for r in reports))
    fig, axes = plt.subplots(1, len(requests) + 1, figsize=(5.2 * (len(requests) + 1), 4.2))
    metrics = [("ua", "UA"), ("ira", "IRA"), ("cra", "CRA"), ("ua_q4", "UA 4-bit"), ("ua_paraphrase", "UA held-out")]
    for ax, request in zip(axes, requests):
        runs = [r for r in reports if r["forget"] == request]
        width = 0.8 / len(runs)
        for j, r in enumerate(runs):
            xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(metrics))]
            ax.bar(xs, [r["after"][k] for k, _ in metrics], width, label=r["method"])
        for i, (k, _) in enumerate(metrics):
            ax.hlines(runs[0]["before"][k], i - 0.4, i + 0.4, colors="k", linestyles="--", label="base" if i == 0 else None)
        ax.set(xticks=range(len(metrics)), xticklabels=[m for _, m in metrics], ylim=(0, 1.05), title=f"forget {request}")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(runs) + 1)
    methods = list(dict.fromkeys(r["method"] for r in reports))
    width = 0.8 / len(requests)
    for j, request in enumerate(requests):
        seconds = {r["method"]: r["seconds"] for r in reports if r["forget"] == request}
        xs = [i + (j - (len(requests) - 1) / 2) * width for i in range(len(methods))]
        axes[-1].bar(xs, [seconds.get(m, 0) for m in methods], width, label=request)
    axes[-1].set(xticks=range(len(methods)), xticklabels=methods, yscale="log", ylabel="seconds", title="wall time (CPU)")
    axes[-1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(requests))
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("unlearning on the demo diffusion model (UnlearnCanvas protocol, by the judge; dashed: the base model)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    reports = run_table(METHODS, tuple(REQUESTS), ["UA", "IRA", "CRA", "UA 4-bit", "UA held-out", "seconds", "peak MB", "delta KB", "edited"],
                        row, model="demo-sd", params=params)
    if reports:
        OUT.mkdir(parents=True, exist_ok=True)
        with atomic_path(OUT / "sd_demo.json") as tmp:
            tmp.write_text(json.dumps(reports, indent=2))
        plot(reports, OUT / "sd_demo.png")
