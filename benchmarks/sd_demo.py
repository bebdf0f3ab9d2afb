"""RAZOR, SLUG, ESD-x and UCE on the demo diffusion model: forget one style and one object.

Prints one table (UA, IRA, CRA before→after, UA after 4-bit, seconds, peak MB, delta KB, edited
tensors or components). Each run is its own `razor unlearn --model demo-sd --json` process, so
peak MB is that process's resident memory (model, classifier and data included). RAZOR and SLUG
may edit the text encoder and the UNet's cross-attention to_k / to_v.
Usage: python benchmarks/sd_demo.py [--methods razor,esd] [--requests styles:dotted,...] [--json FILE]
"""

from __future__ import annotations

from runs import run_table

PARAMS = {"razor": ["towers=[text,xattn]"], "slug": ["towers=[text,xattn]"], "esd": [], "uce": []}
REQUESTS = ("styles:dotted", "objects:star")


def row(r: dict) -> list[str]:
    a, b = r["after"], r["before"]
    return [f"{b['ua']:.2f}→{a['ua']:.2f}", f"{b['ira']:.2f}→{a['ira']:.2f}", f"{b['cra']:.2f}→{a['cra']:.2f}",
            f"{a['ua_q4']:.2f}", f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}", f"{r['delta_bytes'] / 1024:.0f}",
            str(len(r["components"]))]


if __name__ == "__main__":
    run_table(list(PARAMS), REQUESTS, ["UA", "IRA", "CRA", "UA 4-bit", "seconds", "peak MB", "delta KB", "edited"], row,
              model="demo-sd", params=PARAMS)
