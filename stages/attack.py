"""Stage attack: try to bring the forgotten concept back (razor/attack.py) on the edited model, on the
base model and on the cached retrain oracle, within params.yaml's `attack` budgets; attacks.json (DVC
metrics), the ASR plot, and the evaluate stage's report with the attacks added (report.json, .html)."""

from __future__ import annotations

import json
import sys

from razor import attack
from razor.config import AttackParams, AttackStageParams, RetrainParams
from razor.delta import Delta
from razor.plots import attack_bars
from razor.report import write_html
from stages.evaluate import PLOTS
from stages.workspace import STAGES, Workspace, main, write_json


def run(ws: Workspace, request_id: str) -> None:
    """Attack the edited model (and the base and oracle as ceiling and control); add the results to the report."""
    stages = {s: ws.stage_info(request_id, s) for s in STAGES[:STAGES.index("attack")]}  # refuses a missing one
    p = AttackStageParams(**ws.params("attack"))
    model = json.loads((ws.stage_dir(request_id, "curate") / "request.json").read_text())["model"]
    names = attack.planned(ws.family(model), p.attacks)
    attacks = {}
    if names:
        req, task = ws.task(request_id)
        params = task.adapter.parameters()
        delta = Delta.load(ws.stage_dir(request_id, "edit") / "delta.safetensors")
        base = {n: params[n].detach().clone() for n in delta.touched(task.adapter)}
        delta.apply_to(task.adapter)
        oracle = RetrainParams(**(ws.params("baselines").get("retrain") or {}))
        attacks = attack.run(task, names, AttackParams(**p.model_dump(exclude={"attacks"})), base,
                             progress=sys.stderr.isatty(), oracle=oracle)
    report = json.loads((ws.stage_dir(request_id, "evaluate") / "report.json").read_text())
    lineage = dict(report.pop("lineage"), stages=stages)
    report["attacks"] = attacks
    attack_bars(attacks, ws.plot(request_id, "attacks.png"), f"{report['method']}: forget {report['forget']}")
    info = dict(params=p.model_dump(mode="json"), attacks=names)
    if not names:
        info["skipped"] = "no attacks chosen (params.yaml attack.attacks)" if p.attacks != attack.ALL else \
            "the model's family lists no attacks yet"
    with ws.output(request_id, "attack", info) as out:
        write_json(out / "attacks.json", attacks)
        write_json(out / "report.json", dict(report, lineage=lineage))
        write_html(report, {k: ws.plot(request_id, v) for k, v in {**PLOTS, "attacks": "attacks.png"}.items()},
                   out / "report.html", lineage)
    write_json(ws.results_dir(request_id) / "attacks.json", metrics(attacks))


def metrics(attacks: dict) -> dict:
    """DVC's metrics: per attack, the ASR on each model attacked."""
    return {n: {k: a[k] for k in ("asr", "base_asr", "oracle_asr") if a.get(k) is not None} for n, a in attacks.items()}


if __name__ == "__main__":
    main(run, "attack")
