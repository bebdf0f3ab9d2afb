"""The regression gate: before a new version becomes production, every request on its chain must
still be forgotten and utility must stay within tolerance of the root model's."""

from __future__ import annotations

from flows import registry
from razor.config import GateParams
from razor.curate import Curated
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
        fa1, utility = of(model).forget_and_utility(load_task(model, sets(ws, request_id)))
        rows.append(dict(check="forgotten", request=request_id, concept=mv.tags["razor.concept"], value=fa1,
                         limit=p.forget_max, passed=fa1 <= p.forget_max))
    root = ws.model(versions[0].tags["razor.base_model"])
    _, before = of(root).forget_and_utility(load_task(root, sets(ws, versions[-1].tags["razor.request"])))
    rows.append(dict(check="utility", request=versions[-1].tags["razor.request"], value=utility, root=before,
                     limit=before - p.utility_tolerance, passed=utility >= before - p.utility_tolerance))
    return all(r["passed"] for r in rows), rows


def reason(rows: list[dict]) -> str:
    """The failed checks in words."""
    out = []
    for r in rows:
        if r["passed"]:
            continue
        if r["check"] == "forgotten":
            out.append(f"{r['concept']} (request {r['request']}) is recognised again: "
                       f"forget accuracy {r['value']:.2f} > {r['limit']:.2f}")
        else:
            out.append(f"utility {r['value']:.3f} fell below {r['limit']:.3f} (root model {r['root']:.3f})")
    return "; ".join(out)
