"""Every method, the retrain oracle included, on the same demo model and three requests.

Prints one table (FA@1, utility, stability, leakage, FA@1 after 4-bit, seconds, peak MB,
delta KB) and, for RAZOR, where its seconds go. Each run is its own `razor unlearn --json`
process, so peak MB is that process's resident memory (model and data included).
Usage: python benchmarks/clip_demo.py [--methods razor,slug] [--requests objects:star,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from razor.methods import METHODS

REQUESTS = ("objects:star", "styles:dotted", "identities:hana")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--requests", default=",".join(REQUESTS))
    ap.add_argument("--json", type=Path, help="also write every report to this file")
    args = ap.parse_args()
    reports = []
    header = "| request | method | FA@1 | utility | stability | leakage | FA@1 4-bit | seconds | peak MB | delta KB |"
    print(header)
    print("|" + "---|" * 10)
    for request in args.requests.split(","):
        for method in args.methods.split(","):
            cmd = [sys.executable, "-m", "razor.cli", "unlearn", "--forget", request, "--method", method, "--json"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"| {request} | {method} | failed: {done.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            r = json.loads(done.stdout)
            reports.append(r)
            a, b = r["after"], r["before"]
            seconds = r["timing"].get("training (recorded)", r["seconds"])  # a cached oracle still cost its training
            print(f"| {request} | {method} | {b['fa1']:.2f}→{a['fa1']:.2f} | {b['utility']:.3f}→{a['utility']:.3f} "
                  f"| {a['stability']:.3f} | {a['leakage']:.2f} | {a['fa1_q4']:.2f} | {seconds:.1f} "
                  f"| {r['peak_mb']:.0f} | {r['delta_bytes'] / 1024:.0f} |", flush=True)
    razor = [r for r in reports if r["method"] == "razor" and r.get("timing")]
    if razor:
        print("\nRAZOR time split (seconds): " + "; ".join(
            f"{r['forget']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["timing"].items()) for r in razor))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
