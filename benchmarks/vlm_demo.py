"""RAZOR, SLUG and gradient ascent on the demo VLM: forget one identity.

Prints one table (FA, utility, FA after 4-bit, seconds, peak MB, delta KB). Each run is its own
`razor unlearn --model demo-vlm --json` process, so peak MB is that process's resident memory
(model and data included). RAZOR and SLUG may edit the vision tower and the projector.
Usage: python benchmarks/vlm_demo.py [--methods razor,slug,ga] [--requests identities:hana,...] [--json FILE]
"""

from __future__ import annotations

from runs import run_table

PARAMS = {"razor": ["towers=[vision,projector]"], "slug": ["towers=[vision,projector]"], "ga": []}
REQUESTS = ("identities:hana",)


def row(r: dict) -> list[str]:
    a, b = r["after"], r["before"]
    return [f"{b['fa']:.2f}→{a['fa']:.2f}", f"{b['utility']:.3f}→{a['utility']:.3f}", f"{a['fa_q4']:.2f}",
            f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}", f"{r['delta_bytes'] / 1024:.0f}", str(len(r["components"]))]


if __name__ == "__main__":
    run_table(list(PARAMS), REQUESTS, ["FA", "utility", "FA 4-bit", "seconds", "peak MB", "delta KB", "edited"], row,
              model="demo-vlm", params=lambda request, method: PARAMS.get(method, []))
