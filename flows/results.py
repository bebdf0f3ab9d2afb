"""What a request shows. In the Prefect UI, artifacts on its flow run, each under a key of its own
(the Artifacts page keeps every run's): `razor-<request>` the metrics before and after the edit
with the registered version and a link to its MLflow run, `razor-gate-<request>` the gate's verdict
check by check. As a page: its published report (`publish`), verdict first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from razor.config import GateParams
from razor.report import answers, metric_name, write_html
from stages.evaluate import PLOTS
from stages.workspace import Workspace


def run_url(run_id: str) -> str:
    """The MLflow UI's page of a run (for a local store, as `mlflow ui` serves it)."""
    uri, exp = mlflow.get_tracking_uri(), mlflow.get_run(run_id).info.experiment_id
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{exp}/runs/{run_id}"


def publish(ws: Workspace, request_id: str, run_id: str, name: str, version: str, gate: dict | None = None) -> Path:
    """data/runs/<id>/report.html — the attack stage's report opened by the verdict (forgotten? kept? the
    gate's answer, against params.yaml's gate bounds) and the links to the MLflow run and version —
    also logged to the run as its `report.html`."""
    found = json.loads((ws.stage_dir(request_id, "attack") / "report.json").read_text())
    lineage = found.pop("lineage", None)
    bounds = GateParams(**ws.params("gate"))
    url = run_url(run_id)
    links = {f"MLflow run {run_id[:8]}": url, f"{name} v{version}": url.split("/#/")[0] + f"/#/models/{name}/versions/{version}"}
    plots = {k: ws.plot(request_id, v) for k, v in {**PLOTS, "attacks": "attacks.png"}.items()}
    out = write_html(found, plots, ws.run_dir(request_id) / "report.html", lineage,
                     answers(found, bounds.forget_max, bounds.utility_tolerance, gate), links)
    mlflow.MlflowClient().log_artifact(run_id, str(out))
    return out


def key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from names."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def metrics(request_id: str, report: dict, run_id: str, name: str, version: str) -> None:
    """The before/after table of the request's report."""
    before, after = report["before"], report["after"]
    rows = [dict(metric=k, meaning=metric_name(k), before=_num(before.get(k)), after=_num(v)) for k, v in after.items()]
    create_table_artifact(rows, key=key("razor", request_id), description=(
        f"**{request_id}**: forget `{report['forget']}` with {report['method']} → {name} v{version} "
        f"([MLflow run `{run_id}`]({run_url(run_id)}); the full report: its artifact `report.html`)"))


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
