"""Every label of every demo model, with RAZOR and the baselines, checked against issue 19's bounds.

CLIP: every object, style and identity with razor, slug, graddiff, plus the retrain oracle on two
labels per axis (cached under RAZOR_HOME/oracles, so a re-run does not retrain). VLM: every
identity with razor, slug, graddiff. SD and SD3: every style and object with razor, slug, esd, uce.
Every method runs at its defaults (its family's, where the family sets some: razor/families/*/__init__.py):
RAZOR and SLUG share forget_target 0.05 and retain_tolerance 0.06, graddiff stops at the same
forget_target; no request is tuned.

Each run is one `razor unlearn --json` process whose report is written, whole or not at all, to
benchmarks/results/sweep/runs/<family>/<axis>-<label>--<method>.json; a run whose file exists is
skipped, so a killed sweep resumes where it stopped. Then table.md (every run, each bound ✓/✗),
summary.json and one plot per family (utility drop and stability against FA, per label and method).
`--search` sets RAZOR's and SLUG's step search (`search` in razor/config.py) for every family and writes to
benchmarks/results/sweep-<search>/ instead.
Usage: python benchmarks/sweep.py [--families clip,vlm,sd,sd3] [--methods razor,slug] [--labels star,hana]
                                  [--search bisect|predict] [--report]  (only rebuild the table and plots)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from runs import unlearn_json
from tqdm import tqdm

from razor.demo import world
from razor.io import atomic_path

OUT = Path(__file__).parent / "results" / "sweep"
FAMILIES = {  # family → (model, axes, methods)
    "clip": ("demo", ("objects", "styles", "identities"), ("razor", "slug", "graddiff", "retrain")),
    "vlm": ("demo-vlm", ("identities",), ("razor", "slug", "graddiff")),
    "sd": ("demo-sd", ("styles", "objects"), ("razor", "slug", "esd", "uce")),
    "sd3": ("demo-sd3", ("styles", "objects"), ("razor", "slug", "esd", "uce")),
}
ORACLE_LABELS = {"objects": ("star", "triangle"), "styles": ("dotted", "noisy"), "identities": ("hana", "dara")}
TUNING = ("every method at its defaults (its family's where the family sets some), no request tuned: RAZOR and "
          "SLUG share forget_target 0.05 and retain_tolerance 0.06; graddiff, ESD and UCE stop at or train for their "
          "default budgets")


def plan(families: list[str], methods: set[str] | None, labels: set[str] | None) -> list[tuple[str, str, str]]:
    """(family, axis:label, method) of every run asked for, the retrain oracle on ORACLE_LABELS only."""
    runs = []
    for fam in families:
        _, axes, offered = FAMILIES[fam]
        for axis in axes:
            for label in world.labels()[axis]:
                if labels and label not in labels:
                    continue
                for method in offered:
                    if (methods and method not in methods) or (method == "retrain" and label not in ORACLE_LABELS[axis]):
                        continue
                    runs.append((fam, f"{axis}:{label}", method))
    return runs


def path_of(fam: str, request: str, method: str) -> Path:
    return OUT / "runs" / fam / f"{request.replace(':', '-')}--{method}.json"


SEARCHED = ("razor", "slug")  # the methods with a step search


def run_all(runs: list[tuple[str, str, str]], search: str | None) -> None:
    todo = [r for r in runs if not path_of(*r).is_file()]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already done; running {len(todo)}")
    for fam, request, method in tqdm(todo, desc="sweep", unit="run"):
        params = [f"search={search}"] if search and method in SEARCHED else []
        report = unlearn_json(request, method, FAMILIES[fam][0], params)
        if "failed" in report:
            tqdm.write(f"{fam} {request} {method}: failed: {report['failed']}")
            continue
        out = path_of(fam, request, method)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2))


def load() -> dict[str, list[dict]]:
    """family → every saved report."""
    return {fam: [json.loads(p.read_text()) for p in sorted((OUT / "runs" / fam).glob("*.json"))]
            for fam in FAMILIES if (OUT / "runs" / fam).is_dir()}


def probes(r: dict) -> int | None:
    return sum(r["probes"].values()) if r.get("probes") else None


EPS = 1e-6  # metrics are float32 means: 5 of 50 is 0.10000000149, which meets a 0.10 bound


def checks(fam: str, r: dict, oracle: dict, slug: dict) -> dict[str, bool | None]:
    """Each bound of issue 19 for one report (None: not measured by this run)."""
    b, a = r["before"], r["after"]
    if fam == "clip":
        cap = max(0.10, oracle[r["forget"]] + 0.05) if r["forget"] in oracle else 0.10
        s = slug.get(r["forget"])
        vs = None if r["method"] != "razor" or s is None or s["after"]["fa1"] > 0.10 + EPS else (
            a["utility"] >= s["after"]["utility"] - 0.005 and a["stability"] >= s["after"]["stability"] - 0.005)
        return {"FA@1": a["fa1"] <= cap + EPS, "FA@1 held-out": a["fa1_paraphrase"] <= 0.15 + EPS if "fa1_paraphrase" in a else None,
                "4-bit": a["fa1_q4"] <= a["fa1"] + 0.02 + EPS, "utility": b["utility"] - a["utility"] <= 0.02 + EPS,
                "stability": a["stability"] >= 0.95 - EPS, "vs SLUG": vs}
    if fam == "vlm":
        return {"FA": b["fa"] >= 0.85 and a["fa"] <= 0.10 + EPS,
                "FA held-out": a["fa_paraphrase"] <= 0.15 + EPS if "fa_paraphrase" in a else None,
                "utility": b["utility"] - a["utility"] <= 0.03 + EPS}
    kept = 0.08 if fam == "sd" else 0.10  # SD3: issue 21's bounds (IRA and CRA within 10 points, UA 4-bit ≥ 0.85)
    return {"UA": a["ua"] >= 0.90 - EPS, "UA held-out": a["ua_paraphrase"] >= 0.85 - EPS if "ua_paraphrase" in a else None,
            "IRA": abs(a["ira"] - b["ira"]) <= kept + EPS, "CRA": abs(a["cra"] - b["cra"]) <= kept + EPS,
            **({"UA 4-bit": a["ua_q4"] >= 0.85 - EPS} if fam == "sd3" else {})}


def mark(ok: bool | None) -> str:
    return "–" if ok is None else "✓" if ok else "✗"


def figures(fam: str, r: dict) -> list[str]:
    b, a = r["before"], r["after"]
    if fam == "clip":
        held = f"{a['fa1_paraphrase']:.3f}" if "fa1_paraphrase" in a else "–"
        return [f"{b['fa1']:.3f}→{a['fa1']:.3f}", held, f"{a['fa1_q4']:.3f}", f"{100 * (b['utility'] - a['utility']):+.1f}",
                f"{a['stability']:.3f}"]
    if fam == "vlm":
        return [f"{b['fa']:.3f}→{a['fa']:.3f}", f"{100 * (b['utility'] - a['utility']):+.1f}"]
    q4 = [f"{a['ua_q4']:.3f}"] if fam == "sd3" else []
    return [f"{a['ua']:.3f}", *q4, f"{b['ira']:.3f}→{a['ira']:.3f}", f"{b['cra']:.3f}→{a['cra']:.3f}"]


COLUMNS = {"clip": ["FA@1", "FA@1 held-out", "FA@1 4-bit", "utility drop (pts)", "stability"],
           "vlm": ["FA", "utility drop (pts)"], "sd": ["UA", "IRA", "CRA"], "sd3": ["UA", "UA 4-bit", "IRA", "CRA"]}


def seconds(r: dict) -> float:
    return r["timing"].get("training (recorded)", r["seconds"])


def earlier() -> tuple[dict, dict[str, list[str]]]:
    """The summary and each family's table section written before: kept for the families this report has no
    runs of (runs/ is not committed, so a sweep of one family from a clone keeps the others' results)."""
    summary = json.loads((OUT / "summary.json").read_text()) if (OUT / "summary.json").is_file() else {}
    sections, fam = {}, None
    for line in (OUT / "table.md").read_text().splitlines() if (OUT / "table.md").is_file() else []:
        if line.startswith("## "):
            fam = line[3:].split()[0]
            sections[fam] = []
        if fam is not None:
            sections[fam].append(line)
    return summary, sections


def report(reports: dict[str, list[dict]]) -> dict:
    """Write table.md, summary.json and the plots (a family without runs here keeps what was written of it
    before); return the summary."""
    lines = ["# Sweep: every demo label", "", f"Tuning: {TUNING}.", ""]
    summary = {"tuning": TUNING}
    before, sections = earlier()
    for fam in FAMILIES:
        if fam not in reports:
            if fam in sections and fam in before:
                lines += sections[fam]
                summary[fam] = before[fam]
            continue
        rs = reports[fam]
        oracle = {r["forget"]: r["after"]["fa1"] for r in rs if r["method"] == "retrain"}
        slug = {r["forget"]: r for r in rs if r["method"] == "slug"}
        bounds = list(checks(fam, rs[0], oracle, slug)) if rs else []
        lines += [f"## {fam} ({FAMILIES[fam][0]})", "",
                  "| request | method | " + " | ".join(COLUMNS[fam]) + " | probes | seconds | " + " | ".join(bounds) + " |",
                  "|" + "---|" * (len(COLUMNS[fam]) + 4 + len(bounds))]
        missed: dict[str, list[str]] = {}
        for r in sorted(rs, key=lambda r: (r["forget"], r["method"])):
            c = checks(fam, r, oracle, slug)
            n = probes(r)
            lines.append(f"| {r['forget']} | {r['method']} | " + " | ".join(figures(fam, r)) +
                         f" | {'–' if n is None else n} | {seconds(r):.1f} | " + " | ".join(mark(v) for v in c.values()) + " |")
            if r["method"] == "razor":
                for k, v in c.items():
                    if v is False:
                        missed.setdefault(k, []).append(r["forget"])
        by_method = {}
        for r in rs:
            by_method.setdefault(r["method"], []).append(r)
        timing = {m: dict(runs=len(v), median_seconds=round(statistics.median(seconds(r) for r in v), 1),
                          **({"median_probes": statistics.median(probes(r) for r in v)} if all(probes(r) for r in v) else {}))
                  for m, v in by_method.items()}
        razor = by_method.get("razor", [])
        summary[fam] = dict(timing=timing, razor_missed=missed, razor_runs=len(razor),
                            oracle_fa=oracle, razor_minus_oracle={
                                f: round(r["after"]["fa1"] - oracle[f], 3) for r in razor for f in [r["forget"]] if f in oracle})
        lines += ["", "| method | runs | median seconds | median probes |", "|---|---|---|---|"]
        lines += [f"| {m} | {t['runs']} | {t['median_seconds']} | {t.get('median_probes', '–')} |" for m, t in timing.items()]
        lines += ["", f"RAZOR missed ({len(razor)} requests): " +
                  ("; ".join(f"{k}: {', '.join(v)}" for k, v in missed.items()) or "nothing"), ""]
        if summary[fam]["razor_minus_oracle"]:
            lines += ["RAZOR FA@1 − oracle FA@1: " + ", ".join(f"{f} {d:+.3f}" for f, d in summary[fam]["razor_minus_oracle"].items()), ""]
        plot(fam, rs, OUT / f"sweep-{fam}.png")
    OUT.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(OUT / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    return summary


def plot(fam: str, rs: list[dict], path: Path) -> None:
    """Utility drop and stability (or IRA/CRA) against forgetting, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = "sd" if fam == "sd3" else fam
    forget, panels = {"clip": ("fa1", "FA@1 (held-out images)"), "vlm": ("fa", "FA"), "sd": ("ua", "UA")}[kind], {
        "clip": [("utility drop (pts)", lambda r: 100 * (r["before"]["utility"] - r["after"]["utility"]), 2),
                 ("stability", lambda r: r["after"]["stability"], 0.95)],
        "vlm": [("utility drop (pts)", lambda r: 100 * (r["before"]["utility"] - r["after"]["utility"]), 3)],
        "sd": [("IRA change (pts)", lambda r: 100 * (r["after"]["ira"] - r["before"]["ira"]), -8),
               ("CRA change (pts)", lambda r: 100 * (r["after"]["cra"] - r["before"]["cra"]), -8)]}[kind]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (name, value, bound) in zip(axes[0], panels):
        for method in dict.fromkeys(r["method"] for r in rs):
            mine = [r for r in rs if r["method"] == method]
            ax.scatter([r["after"][forget[0]] for r in mine], [value(r) for r in mine], s=28, alpha=0.75, label=method)
            if method == "razor":
                for r in mine:
                    ax.annotate(r["forget"].split(":")[1], (r["after"][forget[0]], value(r)), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")
        ax.axhline(bound, ls="--", c="grey", lw=0.8)
        ax.set_xlabel(f"{forget[1]} after")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    fig.suptitle(f"{fam}: every demo label (dashed: the bound)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--methods", help="only these methods (comma-separated)")
    ap.add_argument("--labels", help="only these labels (comma-separated)")
    ap.add_argument("--search", choices=("bisect", "predict"), help="RAZOR's and SLUG's step search (default: each "
                    "family's default)")
    ap.add_argument("--report", action="store_true", help="rebuild the table and plots from the saved runs only")
    args = ap.parse_args()
    global OUT, TUNING
    if args.search:
        OUT = OUT.with_name(f"sweep-{args.search}")
        TUNING += f"; RAZOR and SLUG with search: {args.search}" + (" (aiming at half the target on forget-val)"
                                                                     if args.search == "predict" else "")
    families = args.families.split(",")
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families {', '.join(sorted(unknown))}; choose from {', '.join(FAMILIES)}")
    if not args.report:
        run_all(plan(families, set(args.methods.split(",")) if args.methods else None,
                     set(args.labels.split(",")) if args.labels else None), args.search)
    report({f: rs for f, rs in load().items() if f in families})


if __name__ == "__main__":
    main()
