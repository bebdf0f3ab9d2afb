"""RAZOR, SLUG, ESD-x and UCE on the demo diffusion model: the demo style and object requests.

Prints one table (UA, IRA, CRA before→after, UA after 4-bit, seconds, peak MB, delta KB, edited
tensors or components). Each run is its own `razor unlearn --model demo-sd --json` process, so
peak MB is that process's resident memory (model, classifier and data included). RAZOR runs with
the params of the committed request (`data/requests/demo-sd-*.yaml`); SLUG may edit the same
towers; ESD-x and UCE run with their defaults.
Usage: python benchmarks/sd_demo.py [--methods razor,esd] [--requests styles:noisy,...] [--json FILE]
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from runs import run_table

REQUESTS = {"styles:noisy": "demo-sd-style-noisy", "objects:star": "demo-sd-object-star"}
METHODS = ["razor", "slug", "esd", "uce"]
ROOT = Path(__file__).resolve().parent.parent


def params(request: str, method: str) -> list[str]:
    """The committed request's params for RAZOR (its towers for SLUG); nothing for the others."""
    name = REQUESTS.get(request)
    if name is None or method not in ("razor", "slug"):
        return []
    given = yaml.safe_load((ROOT / "data" / "requests" / f"{name}.yaml").read_text())["params"]
    keep = given if method == "razor" else {"towers": given["towers"]}
    return [f"{k}={json.dumps(v)}" for k, v in keep.items()]


def row(r: dict) -> list[str]:
    a, b = r["after"], r["before"]
    return [f"{b['ua']:.2f}→{a['ua']:.2f}", f"{b['ira']:.2f}→{a['ira']:.2f}", f"{b['cra']:.2f}→{a['cra']:.2f}",
            f"{a['ua_q4']:.2f}", f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}", f"{r['delta_bytes'] / 1024:.0f}",
            str(len(r["components"]))]


if __name__ == "__main__":
    run_table(METHODS, tuple(REQUESTS), ["UA", "IRA", "CRA", "UA 4-bit", "seconds", "peak MB", "delta KB", "edited"], row,
              model="demo-sd", params=params)
