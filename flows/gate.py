"""The regression gate: before a new version becomes production, every request on its chain must
still be forgotten, utility must stay within tolerance of the root model's, and the attacks the
attack stage ran on the new version must stay within their bounds (`gate.attack_max`, or
`gate.attack_margin` over the retrain oracle's ASR)."""

from __future__ import annotations

import json

from flows import registry
from razor import attack
from razor.config import AttackStageParams, GateParams
from razor.curate import Curated
from razor.errors import RazorError
from razor.families import load_task, of
from stages.workspace import Workspace


def sets(ws: Workspace, request_id: str) -> Curated:
    return ws.curated(request_id)[2]


def check(ws: Workspace, name: str, version: str, p: GateParams) -> tuple[bool, list[dict]]:
    """(passed, one row per check) for `version` of `name`."""
    versions = registry.chain(name, version)
    model = ws.model(registry.materialize(ws, name, version).relative_to(ws.data).as_posix())
    rows = []
    for mv in versions:
        request_id = mv.tags["razor.request"]
        task = load_task(model, sets(ws, request_id))
        if mv is versions[-1]:
            fa1, utility = of(model).forget_and_utility(task)
        else:  # an earlier request: its forget accuracy alone (the utility that counts is the new request's)
            fa1 = of(model).forget_share(task)
        rows.append(dict(check="forgotten", request=request_id, concept=mv.tags["razor.concept"], value=fa1,
                         limit=p.forget_max, passed=fa1 <= p.forget_max))
    root = ws.model(versions[0].tags["razor.base_model"])
    _, before = of(root).forget_and_utility(load_task(root, sets(ws, versions[-1].tags["razor.request"])))
    rows.append(dict(check="utility", request=versions[-1].tags["razor.request"], value=utility, root=before,
                     limit=before - p.utility_tolerance, passed=utility >= before - p.utility_tolerance))
    rows += attack_rows(ws, versions[-1].tags["razor.request"], versions[-1].tags["razor.concept"], p)
    return all(r["passed"] for r in rows), rows


def check_bounds(ws: Workspace, model: str, p: GateParams) -> None:
    """Before any work: refuse attack bounds the attack stage cannot meet on this model's family — an
    attack it does not run (attack.attacks), or a margin over a retrain oracle the family has none of."""
    fam = ws.family(model)
    runs = attack.planned(fam, AttackStageParams(**ws.params("attack")).attacks)
    unrun = sorted(n for n in {**p.attack_max, **p.attack_margin} if n not in runs)
    if unrun:
        raise RazorError(f"params.yaml gate bounds the attack {', '.join(unrun)}, which the attack stage does not run "
                         f"on {fam.kind} models (it runs: {', '.join(runs) or 'none'}); add it to attack.attacks "
                         f"or drop the bound")
    if p.attack_margin and "retrain" not in fam.methods:
        raise RazorError(f"params.yaml gate.attack_margin compares with the retrain oracle's ASR, and {fam.kind} "
                         f"models have no retrain oracle; bound their attacks with gate.attack_max instead")


def attack_rows(ws: Workspace, request_id: str, concept: str, p: GateParams) -> list[dict]:
    """One row per attack bound: the attack stage's ASR on the new version against the bound; a bound
    whose attack (or, for a margin, whose oracle) was not run fails, saying so."""
    path = ws.stage_dir(request_id, "attack") / "attacks.json"
    found = json.loads(path.read_text()) if path.is_file() else {}
    rows = []
    bounds = [("max", n, b) for n, b in p.attack_max.items()] + [("margin", n, b) for n, b in p.attack_margin.items()]
    for kind, name, bound in bounds:
        a = found.get(name) or {}
        oracle = a.get("oracle_asr")
        limit = bound if kind == "max" else None if oracle is None else oracle + bound
        row = dict(check="attack", bound=kind, request=request_id, concept=concept, attack=name, value=a.get("asr"),
                   oracle=oracle, limit=limit, missing="attack" if not a else "oracle" if limit is None else None)
        row["passed"] = row["missing"] is None and row["value"] <= row["limit"] + 1e-9
        rows.append(row)
    return rows


def reason(rows: list[dict]) -> str:
    """The failed checks in words (the last forget check is the new request's own)."""
    out = []
    own = max((i for i, r in enumerate(rows) if r["check"] == "forgotten"), default=None)
    for i, r in enumerate(rows):
        if r["passed"]:
            continue
        if r["check"] == "forgotten":
            what = "still recognised" if i == own else "recognised again"
            out.append(f"{r['concept']} (request {r['request']}) is {what}: forget accuracy {r['value']:.2f} > "
                       f"{r['limit']:.2f}")
        elif r["check"] == "attack" and r["missing"] == "attack":
            out.append(f"attack {r['attack']} was not run on request {r['request']} (params.yaml attack.attacks); "
                       f"run it or drop its gate bound")
        elif r["check"] == "attack" and r["missing"] == "oracle":
            out.append(f"attack {r['attack']} has no retrain oracle to compare with on request {r['request']} (run "
                       f"--method retrain on it once to cache one, or bound it with gate.attack_max)")
        elif r["check"] == "attack":
            over = f" (the oracle's {r['oracle']:.2f} + {r['limit'] - r['oracle']:.2f})" if r["bound"] == "margin" else ""
            out.append(f"attack {r['attack']} brings {r['concept']} (request {r['request']}) back: "
                       f"ASR {r['value']:.2f} > {r['limit']:.2f}{over}")
        else:
            out.append(f"utility {r['value']:.3f} fell below {r['limit']:.3f} (root model {r['root']:.3f})")
    return "; ".join(out)
