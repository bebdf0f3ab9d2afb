"""RAZOR, SLUG and gradient ascent on the demo VLM: forget one identity.

Prints one table (FA, utility, FA after 4-bit, seconds, peak MB, delta KB). Each run is its own
`razor unlearn --model demo-vlm --json` process, so peak MB is that process's resident memory
(model and data included). RAZOR and SLUG may edit the vision tower and the projector.
Usage: python benchmarks/vlm_demo.py [--methods razor,slug,ga] [--requests identities:hana,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METHODS = {"razor": ["towers=[vision,projector]"], "slug": ["towers=[vision,projector]"], "ga": []}
REQUESTS = ("identities:hana",)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--requests", default=",".join(REQUESTS))
    ap.add_argument("--json", type=Path, help="also write every report to this file")
    args = ap.parse_args()
    reports = []
    print("| request | method | FA | utility | FA 4-bit | seconds | peak MB | delta KB | edited |")
    print("|" + "---|" * 9)
    for request in args.requests.split(","):
        for method in args.methods.split(","):
            params = [arg for p in METHODS.get(method, []) for arg in ("--param", p)]
            cmd = [sys.executable, "-m", "razor.cli", "unlearn", "--model", "demo-vlm", "--forget", request,
                   "--method", method, *params, "--json"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"| {request} | {method} | failed: {done.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            r = json.loads(done.stdout)
            reports.append(r)
            a, b = r["after"], r["before"]
            edited = len(r["components"])
            print(f"| {request} | {method} | {b['fa']:.2f}→{a['fa']:.2f} | {b['utility']:.3f}→{a['utility']:.3f} "
                  f"| {a['fa_q4']:.2f} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['delta_bytes'] / 1024:.0f} "
                  f"| {edited} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
