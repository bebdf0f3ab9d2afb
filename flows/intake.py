"""The intake flow: run every queued request, oldest first, against the current production version
of its registered model, gate the result, and promote it only if the gate passes.

`razor intake` runs it once; `razor serve` serves it on a schedule (a Prefect deployment).
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import yaml
from prefect import flow, get_run_logger
from prefect.exceptions import CancelledRun

from flows import approval, gate, lineage, queue, registry, results
from flows.unlearn import StageRefused, unlearn
from razor.config import GateParams
from razor.errors import RazorError
from razor.io import atomic_path
from stages.workspace import Workspace


def admitted(ws: Workspace, request_id: str) -> Path:
    """The request as it will run: its model replaced by the production version's folder, if any."""
    req = queue.submitted(ws, request_id)
    name = registry.registered_name(ws, req.model)
    version = registry.production(name)
    if version is not None:
        model = registry.materialize(ws, name, version).relative_to(ws.data).as_posix()
        req = req.model_copy(update={"model": model})
    path = queue.folder(ws) / f"{request_id}.admitted.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(req.model_dump(), sort_keys=False))
    return path


def process(ws: Workspace, request_id: str) -> dict | None:
    """One queued request: unlearn, gate, (with gate.approval: required) wait for an approver, promote or
    refuse; returns its final queue entry, or None if another intake took it first."""
    logger = get_run_logger()
    if not queue.take(ws, request_id):
        logger.info(f"{request_id}: another intake took it")
        return None
    try:
        bounds = GateParams(**ws.params("gate"))
        gate.check_bounds(ws, queue.submitted(ws, request_id).model, bounds)  # a bound it cannot meet: before any work
        if bounds.approval == "required":
            approval.check_server("params.yaml gate.approval: required")
        lineage.experiment(ws)
        clock = time.monotonic()
        path = admitted(ws, request_id)
        seconds = dict(materialize=time.monotonic() - clock)
        result = unlearn(str(path), str(ws.root))
        seconds["unlearn"] = time.monotonic() - clock - seconds["materialize"]
        name, version = result["registered_model"], result["report"]["model_version"]
        passed, rows = gate.check(ws, name, version, bounds)
        seconds["gate"] = time.monotonic() - clock - seconds["materialize"] - seconds["unlearn"]
        client = mlflow.MlflowClient()
        client.set_model_version_tag(name, version, "razor.gate", "passed" if passed else "refused")
        with mlflow.start_run(run_id=result["report"]["mlflow_run_id"]):
            mlflow.log_dict(dict(passed=passed, checks=rows), "gate.json")
        common = dict(registered_model=name, model_version=version, mlflow_run_id=result["report"]["mlflow_run_id"],
                      seconds={k: round(v, 2) for k, v in seconds.items()}, gate=rows)
        why = gate.reason(rows)
        results.verdict(request_id, passed, rows, name, version, common["mlflow_run_id"], why, bounds.approval == "required")
        results.publish(ws, request_id, common["mlflow_run_id"], name, version, dict(passed=passed, why=why))
        if not passed:
            logger.warning(f"{request_id} refused promotion: {why}")
            return queue.set_state(ws, request_id, "refused", f"gate: {why}", **common)
        if bounds.approval == "required":
            answer = approval.ask(ws, request_id, name, version, bounds.approval_timeout)
            approval.record(name, version, common["mlflow_run_id"], answer)
            if not answer.approve:
                logger.warning(f"{request_id}: {answer.approver} rejected {name} v{version}")
                return queue.set_state(ws, request_id, "refused", f"rejected by {answer.approver}"
                                       + (f": {answer.reason}" if answer.reason else ""), **common)
            logger.info(f"{request_id}: {answer.approver} approved {name} v{version}")
        previous = registry.production(name)
        registry.promote(name, version)
        logger.info(f"{name} production: v{previous or '(base)'} → v{version}")
        return queue.set_state(ws, request_id, "done", f"promoted to production (was {previous or 'the base model'})",
                               **common)
    except CancelledRun:  # Ctrl-C: the request goes back to the queue and the intake stops
        queue.set_state(ws, request_id, "queued", "interrupted; it runs again at the next intake")
        raise
    except (StageRefused, RazorError) as e:
        return queue.set_state(ws, request_id, "refused", str(e))
    except Exception as e:  # noqa: BLE001 — recorded, and the next request still runs
        logger.exception(f"{request_id} failed")
        return queue.set_state(ws, request_id, "failed", f"{type(e).__name__}: {e}")


@flow(name="razor-intake")
def intake(workspace: str = ".") -> list[dict]:
    """Run the queued requests one after another (request N edits what request N−1 produced)."""
    ws = Workspace(Path(workspace).resolve())
    for request_id in queue.reap(ws):
        get_run_logger().warning(f"{request_id}: its earlier run ended unfinished; marked failed")
    done = [process(ws, e["id"]) for e in queue.entries(ws) if e["state"] == "queued"]
    return [e for e in done if e is not None]
