"""Every method, the retrain oracle included, on the same demo model and three requests.

Prints one table (FA@1, utility, stability, leakage, FA@1 after 4-bit, seconds, peak MB,
delta KB) and, for RAZOR, where its seconds go. Each run is its own `razor unlearn --json`
process, so peak MB is that process's resident memory (model and data included).
Usage: python benchmarks/clip_demo.py [--methods razor,slug] [--requests objects:star,...] [--json FILE]
"""

from __future__ import annotations

from runs import run_table

from razor.families.clip import FAMILY as CLIP

REQUESTS = ("objects:star", "styles:dotted", "identities:hana")


def row(r: dict) -> list[str]:
    a, b = r["after"], r["before"]
    seconds = r["timing"].get("training (recorded)", r["seconds"])  # a cached oracle still cost its training
    return [f"{b['fa1']:.2f}→{a['fa1']:.2f}", f"{b['utility']:.3f}→{a['utility']:.3f}", f"{a['stability']:.3f}",
            f"{a['leakage']:.2f}", f"{a['fa1_q4']:.2f}", f"{seconds:.1f}", f"{r['peak_mb']:.0f}",
            f"{r['delta_bytes'] / 1024:.0f}"]


def main() -> None:
    methods = list(CLIP.methods)
    reports = run_table(methods, REQUESTS, ["FA@1", "utility", "stability", "leakage", "FA@1 4-bit", "seconds", "peak MB",
                                            "delta KB"], row)
    razor = [r for r in reports if r["method"] == "razor" and r.get("timing")]
    if razor:
        print("\nRAZOR time split (seconds): " + "; ".join(
            f"{r['forget']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["timing"].items()) for r in razor))


if __name__ == "__main__":
    main()
