"""Can a forgotten concept be brought back? Every attack of a family (razor.attack) after every
method on the family's demo requests, each attack also run on the base model (the ceiling) and, for
CLIP, on the retrain oracle (the control: what an attacker gets from a model that never learned the
concept; `retrain` runs first for each request: it trains and caches the oracle the later rows
measure). Diffusion: RAZOR (the committed requests' params), ESD-x and UCE side by side; the VLM:
RAZOR and its baselines.

Writes benchmarks/results/attacks/<family>/ (reports.json after every run, table.md, asr.png) and
prints the table: the ASR (CLIP, VLM: the concept's forget accuracy on held-out forget items after
the attack; diffusion: the share of the concept's generations the judge labels the concept; mia: its
AUC, with its verdict where that is not "measured") on the edited model, the base's and the oracle's beside it.
A remedy is measured as a variant: `--variant NAME --param KEY=VALUE ...` gives every run those
params and writes benchmarks/results/attacks/<family>-NAME/.
Usage: python benchmarks/attacks.py [--family clip|sd|vlm] [--methods ...] [--requests ...] [--resume]
                                    [--variant NAME --param KEY=VALUE ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runs import run_table
from sd_demo import params as sd_params
from vlm_demo import PARAMS as VLM_PARAMS

from razor.families import DEMO_MODELS
from razor.report import attack_figures

PARTS = {  # family → (demo model, requests, methods, params(request, method))
    "clip": ("demo", ("objects:star", "styles:dotted", "identities:hana"), None, None),
    "sd": ("demo-sd", ("styles:noisy", "objects:star"), ["razor", "esd", "uce"], sd_params),
    "vlm": ("demo-vlm", ("identities:hana",), None, lambda request, method: VLM_PARAMS.get(method, [])),
}


def option(name: str, default=None, many: bool = False):
    """Take `--name VALUE` (every one, with `many`) out of the command line before run_table reads it."""
    found = []
    while name in sys.argv:
        i = sys.argv.index(name)
        found.append(sys.argv[i + 1])
        del sys.argv[i:i + 2]
    return found if many else (found[-1] if found else default)


FAMILY = option("--family", "clip")
VARIANT = option("--variant")  # a remedy's name: its --param values go to every method's run
EXTRA = option("--param", many=True)
if FAMILY not in PARTS:
    sys.exit(f"--family is one of {', '.join(PARTS)}, not {FAMILY!r}")
if EXTRA and not VARIANT:
    sys.exit("--param changes the method; name the variant it makes with --variant NAME (its own results folder)")
MODEL, REQUESTS, METHODS, PARAMS = PARTS[FAMILY]
ATTACKS = tuple(DEMO_MODELS[MODEL].attacks)
OUT = Path(__file__).parent / "results" / "attacks" / (FAMILY + (f"-{VARIANT}" if VARIANT else ""))


def params(request: str, method: str) -> list[str]:
    """The family's params for this run, then the variant's (later ones win)."""
    return (PARAMS(request, method) if PARAMS else []) + EXTRA


def forgotten(r: dict) -> float:
    """The concept after the edit, before any attack: FA@1 (CLIP), FA (VLM), 1 − UA (diffusion)."""
    a = r["after"]
    return a["fa1"] if "fa1" in a else a["fa"] if "fa" in a else 1 - a["ua"]


def row(r: dict) -> list[str]:
    cells = [f"{forgotten(r):.2f}"]
    for name in ATTACKS:
        a = r["attacks"].get(name)
        if a is None:  # a report from before the attack existed
            cells.append("not run")
            continue
        edited, base, oracle = attack_figures(a)
        said = f"{edited:.2f} ({base:.2f} / {'—' if oracle is None else f'{oracle:.2f}'})"
        cells.append(said + (f" {a['verdict']}" if a.get("verdict", "measured") != "measured" else ""))
    return cells


def plot(reports: list[dict], path: Path) -> None:
    """One panel per request: each method's ASR per attack, the base's (ceiling) and the oracle's (control) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requests = list(dict.fromkeys(r["forget"] for r in reports))
    methods = list(dict.fromkeys(r["method"] for r in reports))
    fig, axes = plt.subplots(1, len(requests), figsize=(5 * len(requests), 4), sharey=True, squeeze=False)
    width = 0.8 / len(methods)
    for ax, request in zip(axes[0], requests):
        mine = {r["method"]: r for r in reports if r["forget"] == request}
        for i, m in enumerate(methods):
            if m in mine:
                ax.bar([k + i * width for k in range(len(ATTACKS))],
                       [attack_figures(mine[m]["attacks"][a])[0] if a in mine[m]["attacks"] else 0 for a in ATTACKS], width, label=m)
        any_report = next(iter(mine.values()))
        for k, a in enumerate(ATTACKS):
            if a not in any_report["attacks"]:
                continue
            span = [k - width / 2, k + 0.8 - width / 2]
            _, base, oracle = attack_figures(any_report["attacks"][a])
            ax.plot(span, [base] * 2, "k--", lw=1, label="base" if k == 0 else None)
            if oracle is not None:
                ax.plot(span, [oracle] * 2, "g-", lw=2, label="oracle" if k == 0 else None)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(ATTACKS))],
                      [f"{a} (AUC)" if a == "mia" else a for a in ATTACKS], fontsize=8, rotation=20, ha="right")
        ax.set_title(request)
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("ASR: the concept after the attack")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    methods = METHODS or list(DEMO_MODELS[MODEL].methods)
    if "retrain" in methods:  # the oracle first: later rows measure it
        methods = ["retrain"] + [m for m in methods if m != "retrain"]
    if "--json" not in sys.argv and "--report" not in sys.argv:
        OUT.mkdir(parents=True, exist_ok=True)
        sys.argv += ["--json", str(OUT / "reports.json")]
    columns = ["forgotten after"] + [f"{a}: edited (base / oracle)" for a in ATTACKS]
    reports = run_table(methods, REQUESTS, columns, row, model=MODEL, params=params,
                        options=["--attacks", ",".join(ATTACKS)])
    if reports:
        order = {m: i for i, m in enumerate(methods)}
        reports.sort(key=lambda r: (REQUESTS.index(r["forget"]) if r["forget"] in REQUESTS else len(REQUESTS),
                                    order.get(r["method"], len(order))))
        OUT.mkdir(parents=True, exist_ok=True)
        plot(reports, OUT / "asr.png")
        lines = ["| request | method | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
        lines += [f"| {r['forget']} | {r['method']} | " + " | ".join(row(r)) + " |" for r in reports]
        (OUT / "table.md").write_text("\n".join(lines) + "\n")
        budgets = {a: r["attacks"][a]["budget"] for r in reports for a in ATTACKS if a in r["attacks"]}
        (OUT / "budgets.json").write_text(json.dumps(budgets, indent=2))
        print(f"\nbudgets: {json.dumps(budgets)}\nwritten: {OUT}/")


if __name__ == "__main__":
    main()
