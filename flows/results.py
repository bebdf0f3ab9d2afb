"""What a request shows in the Prefect UI: artifacts on its flow run, each under a key of its own
(the Artifacts page keeps every run's): `razor-<request>` the metrics before and after the edit
with the registered version and its MLflow run, `razor-gate-<request>` the gate's verdict check by
check."""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact


def key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from names."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def metrics(request_id: str, report: dict, run_id: str, name: str, version: str) -> None:
    """The before/after table of the request's report."""
    before, after = report["before"], report["after"]
    rows = [dict(metric=k, before=_num(before.get(k)), after=_num(v)) for k, v in after.items()]
    create_table_artifact(rows, key=key("razor", request_id), description=(
        f"**{request_id}**: forget `{report['forget']}` with {report['method']} → {name} v{version} "
        f"(MLflow run `{run_id}`; the full report: its artifact `report.html`)"))


def verdict(request_id: str, passed: bool, rows: list[dict], name: str, version: str, run_id: str, why: str,
            approval: bool = False) -> None:
    """The gate's answer for the new version and every check it made (`approval`: an approver has the last word)."""
    then = "passed, awaiting an approver (razor approve)" if approval else "passed, promoted"
    lines = [f"## {name} v{version}: gate {then if passed else 'refused'}", "",
             f"Request **{request_id}**, MLflow run `{run_id}`." + ("" if passed else f" Refused: {why}."), "",
             "| check | request | concept / attack | value | limit | passed |", "|---|---|---|---|---|---|"]
    for r in rows:
        what = r.get("attack") or r.get("concept") or "utility vs the root model"
        lines.append(f"| {r['check']} | {r['request']} | {what} | {_num(r['value'])} | {_num(r['limit'])} | "
                     f"{'yes' if r['passed'] else '**no**'} |")
    create_markdown_artifact("\n".join(lines), key=key("razor-gate", request_id),
                             description=f"gate of {request_id}: {'passed' if passed else 'refused'}")


def _num(v):
    return round(v, 4) if isinstance(v, float) else v
