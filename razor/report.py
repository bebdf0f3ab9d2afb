"""The before/after report of one unlearning run: a JSON object and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from razor.families import of
from razor.io import atomic_path
from razor.quantize import BITS

NAMES = {"fa1": "forget accuracy, top-1 (FA@1)", "fa5": "forget accuracy, top-5 (FA@5)",
         "forget_cos": "image–concept similarity (forget cosine)", "utility": "accuracy on the other labels (utility)",
         "stability": "retain predictions unchanged (stability)", "leakage": "membership leakage (MIA)",
         "fa": "answers naming the concept (FA)", "ua": "concept prompts not drawing it (UA)",
         "ira": "other concepts drawn right (IRA)", "cra": "other domains drawn right (CRA)"}
LOWER = ("fa1", "fa5", "forget_cos", "leakage", "fa")  # how much of the concept is left: lower is better


def summarize(method: str, task, components: list[str], seconds: float, peak_mb: float, delta_bytes: int,
              before: dict, after: dict, timing: dict, bits=BITS, probes: dict | None = None,
              target: dict | None = None) -> dict:
    """The report object `razor unlearn --json` prints (with `judge` where a family's outputs are
    labelled by another model: a diffusion model's image classifier, and `probes` where the method
    ran a step search: its probes, partial and full-model apart, and `forget_target` where the method
    stops at one: its value and where it came from; `fa_per_label` where a request forgets several labels and
    the family measures each; `ci95`: a 95% Wilson interval of each share
    measured on few items, from its item count, pooled over wordings or axes where it averages them);
    the metrics under held-out wordings
    (`*_paraphrase`) follow the family's keys where the data has such wordings."""
    fam = of(task.adapter)
    k = fam.keys(bits)
    k += tuple(x for x in before if x.endswith(PARAPHRASE) and x in after)
    judge = dict(judge=fam.judge(task)) if fam.judge else {}
    return dict(
        method=method, forget=f"{task.axis}:{task.label}", components=components,
        seconds=round(seconds, 3), peak_mb=round(peak_mb, 1), delta_bytes=delta_bytes,
        before={x: before[x] for x in k}, after={x: after[x] for x in k},
        ci95={side: {x: wilson(m[x], n) for x, n in m.get("counts", {}).items() if x in k}
              for side, m in (("before", before), ("after", after))},
        utility_per_axis=dict(before=before["utility_per_axis"], after=after["utility_per_axis"]),
        **({"fa_per_label": dict(before=before["fa_per_label"], after=after["fa_per_label"])} if "fa_per_label" in after else {}),
        quantized=dict(before=before["quantized"], after=after["quantized"]),
        timing={x: round(v, 3) for x, v in timing.items()},
        **(dict(probes=probes) if probes else {}),
        **(dict(forget_target=target) if target else {}),
        **judge,
    )


PARAPHRASE = "_paraphrase"


def wilson(share: float, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of a share measured on `n` items."""
    if n <= 0:
        return [0.0, 1.0]
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def metric_name(key: str) -> str:
    if key in NAMES:
        return NAMES[key]
    if key.endswith(PARAPHRASE):
        return f"{NAMES[key.removesuffix(PARAPHRASE)]} (held-out wording)"
    base, bits = key.rsplit("_q", 1)
    return f"{NAMES[base]} ({bits}-bit)"


def base_key(key: str) -> str:
    """A metric's key without its held-out-wording or quantisation suffix."""
    return key.removesuffix(PARAPHRASE).split("_q")[0]


def lower_is_better(key: str) -> bool:
    return base_key(key) in LOWER


def by_direction(report: dict) -> list[tuple[str, list[str]]]:
    """The report's metric keys grouped: the concept's (lower is better), then the rest (higher is better)."""
    keys = list(report["before"])
    return [(title, group) for title, group in (
        ("the concept — lower is better", [k for k in keys if lower_is_better(k)]),
        ("everything else — higher is better", [k for k in keys if not lower_is_better(k)])) if group]


def answers(report: dict, forget_max: float, utility_tolerance: float,
            gate: dict | None = None) -> list[tuple[str, bool | None, str]]:
    """(question, answer, the figures) for: forgotten? kept? the gate's answer? — against the gate's bounds."""
    before, after = report["before"], report["after"]
    key = next(iter(before))  # the family's forget metric comes first (fa1, fa, ua)
    left = after[key] if lower_is_better(key) else 1 - after[key]  # the share of the concept still there
    keep = "utility" if "utility" in before else "ira"
    drop = before[keep] - after[keep]
    rows = [("Forgotten?", left <= forget_max, f"{metric_name(key)} {before[key]:.2f} → {after[key]:.2f}: "
             f"{left:.2f} of the concept left, the gate allows {forget_max:.2f}"),
            ("Kept?", drop <= utility_tolerance, f"{metric_name(keep)} {before[keep]:.3f} → {after[keep]:.3f} "
             f"({-drop * 100:+.1f} points; the gate allows −{utility_tolerance * 100:.0f})")]
    if gate is None:
        rows.append(("Gate?", None, "not run: `razor run` registers the version without promoting it; "
                                    "`razor intake` gates it and promotes it if it passes"))
    else:
        rows.append(("Gate?", gate["passed"], "passed" + (", promoted" if gate.get("promoted") else "")
                     if gate["passed"] else f"refused: {gate['why']}"))
    return rows


def table(report: dict) -> str:
    """The before/after table as plain text."""
    comps = report["components"]
    width = max(len(metric_name(k)) for k in report["before"]) + 2
    lines = [f"{report['method']} — forget {report['forget']}",
             f"edited: {', '.join(comps[:8]) or '(nothing)'}" + (f" … (+{len(comps) - 8})" if len(comps) > 8 else ""),
             f"{'metric':<{width}}{'before':>10}{'after':>10}"]
    for title, keys in by_direction(report):
        lines.append(f"  {title}")
        lines += [f"{metric_name(k):<{width}}{report['before'][k]:>10.3f}{report['after'][k]:>10.3f}" for k in keys]
    lines.append(f"seconds {report['seconds']:.1f} · peak {report['peak_mb']:.0f} MB · "
                 f"delta {report['delta_bytes'] / 1024:.1f} KB")
    if "judge" in report:
        lines.append(f"judged by {report['judge']}")
    if report.get("attacks"):
        lines.append(f"{'attack (ASR)':<36}{'edited':>10}{'base':>10}{'oracle':>10}")
        for name, a in report["attacks"].items():
            lines.append(f"{attack_name(name, a):<36}" + "".join(
                f"{v:>10.3f}" if v is not None else f"{'—':>10}" for v in attack_figures(a)))
        lines += [a["note"] for a in report["attacks"].values() if a.get("note")]
    return "\n".join(lines)


def attack_figures(a: dict) -> tuple[float | None, float | None, float | None]:
    """(edited, base, oracle): an attack's ASRs; for one with a verdict (mia) its AUCs, whatever the
    verdict (its name says it)."""
    if "verdict" in a:
        return a["auc"], (a.get("base") or {}).get("auc"), (a.get("oracle") or {}).get("auc")
    return a["asr"], a["base_asr"], a["oracle_asr"]


def attack_name(name: str, result: dict) -> str:
    """An attack and its budget, e.g. "relearn_retain (50 steps)"."""
    b = result["budget"]
    said = [f"{b[k]} {w}" for k, w in (("shots", "shots"), ("steps", "steps"), ("shots_per_label", "per label")) if k in b]
    said += [b["format"]] if "format" in b else []
    said += [f"{b['tokens']} learned word{'s' * (b['tokens'] > 1)}"] if "tokens" in b else []
    said += ["no image"] if b.get("image") is False else []
    said += [f"AUC, {result['verdict']}"] if "verdict" in result else []
    return f"{name} ({', '.join(said)})" if said else name


def attacks_html(attacks: dict | None) -> str:
    """The attacks' section: each attack's ASR on the edited, base and oracle models."""
    if not attacks:
        return ""

    def cell(v):
        return "—" if v is None else f"{v:.3f}"

    rows = "".join(f"<tr><td>{html.escape(attack_name(n, a))}</td>" + "".join(
        f"<td>{cell(v)}</td>" for v in attack_figures(a)) + "</tr>" for n, a in attacks.items())
    notes = "".join(f"<p>{html.escape(a['note'])}</p>" for a in attacks.values() if a.get("note"))
    return ("<h2>Attacks: can the concept be brought back?</h2><p>ASR: how much of the concept each attack brings "
            "back: the forget accuracy on held-out forget items (CLIP, VLM), the share of the concept's generations "
            "the judge labels the concept (diffusion), for mia the AUC; base: the model before the edit; oracle: a "
            "model trained without the concept (— where none is cached).</p><table><tr><th>attack</th><th>edited</th>"
            f"<th>base</th><th>oracle</th></tr>{rows}</table>{notes}")


def write_html(report: dict, plots: dict[str, Path], out: Path, lineage: dict | None = None,
               answers: list[tuple[str, bool | None, str]] | None = None, links: dict[str, str] | None = None) -> Path:
    """One HTML page: the verdict first (`answers`, where given), the metrics grouped by direction, the
    attacks, the plots embedded as PNG data, `links` (name → URL), the lineage (hashes, params)."""
    def mark(ok):
        return {True: "<b style='color:#1a7f37'>yes</b>", False: "<b style='color:#cf222e'>no</b>"}.get(ok, "—")

    said = "".join(f"<tr><td>{html.escape(q)}</td><td>{mark(ok)}</td><td>{html.escape(why)}</td></tr>"
                   for q, ok, why in answers or [])
    rows = "".join(f"<tr><th colspan=3>{html.escape(title)}</th></tr>" + "".join(
        f"<tr><td>{html.escape(metric_name(k))}</td><td>{report['before'][k]:.3f}</td><td>{report['after'][k]:.3f}</td></tr>"
        for k in keys) for title, keys in by_direction(report))
    figures = "".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'><figcaption>{html.escape(name)}</figcaption></figure>"
        for name, path in plots.items() if path.is_file())
    linked = " · ".join(f"<a href='{html.escape(url)}'>{html.escape(name)}</a>" for name, url in (links or {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>RAZOR — {html.escape(report['forget'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child{{text-align:left}}
th[colspan]{{text-align:left;background:#f3f3f3}}img{{max-width:100%}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body>
<h1>Forget {html.escape(report['forget'])} — {html.escape(report['method'])}</h1>
{f"<table class='verdict'>{said}</table>" if said else ""}
{f"<p>{linked}</p>" if linked else ""}
<p>Edited: {html.escape(', '.join(report['components']) or '(nothing)')}<br>
{report['seconds']:.1f} s · peak {report['peak_mb']:.0f} MB · delta {report['delta_bytes'] / 1024:.1f} KB
{('<br>Judged by ' + html.escape(report['judge'])) if 'judge' in report else ''}</p>
<table><tr><th>metric</th><th>before</th><th>after</th></tr>{rows}</table>
{attacks_html(report.get("attacks"))}
{figures}
<h2>Lineage</h2><pre>{html.escape(json.dumps(lineage or {}, indent=2))}</pre></body></html>"""
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    return out
