"""The optional human approval before promotion (params.yaml `gate.approval: required`).

After the gate passes, the intake pauses with Prefect's typed input (`Approval`) until an approver
answers, with `razor approve` or with the form on the paused run in the Prefect UI; the answer goes
to the version's MLflow tags and its run. Answering takes the Prefect server the intake runs on.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

import mlflow
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, NotPausedError
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL
from pydantic import Field

from flows import queue
from razor.errors import RazorError
from stages.workspace import Workspace

AWAITING = "awaiting approval"


class Approval(RunInput):
    """An approver's answer on a version the gate passed."""

    approve: bool = Field(description="true: promote the version to production; false: refuse it")
    approver: str = Field(min_length=1, description="who answers (recorded in MLflow)")
    reason: str = Field("", description="why (recorded in MLflow)")


def check_server(what: str) -> str:
    """The configured Prefect API's URL; an ephemeral server ends with the process, so nobody could answer."""
    url = PREFECT_API_URL.value()
    if not url:
        raise RazorError(f"{what} takes a Prefect server (an ephemeral one ends with this process, so no approver could "
                         "answer): start one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api, "
                         "or use `razor serve --start-server`; nothing was run")
    return url


def ask(ws: Workspace, request_id: str, name: str, version: str, timeout: int) -> Approval:
    """Pause the running intake until an approver answers on `version` of `name` (at most `timeout` seconds)."""
    run = FlowRunContext.get().flow_run
    queue.set_state(ws, request_id, "running", f"{AWAITING} of {name} v{version}: razor approve {request_id} --by NAME "
                                               "(or --reject), or the paused run's form in the Prefect UI",
                    flow_run_id=str(run.id))
    try:
        return pause_flow_run(wait_for_input=Approval, timeout=timeout, key=f"approve-{request_id}")
    except FlowPauseTimeout:
        raise RazorError(f"no approver answered within {timeout} s (gate.approval_timeout); {name} v{version} was not "
                         "promoted — submit the request again under a new id") from None


def record(name: str, version: str, run_id: str, answer: Approval) -> None:
    """The answer as the version's tags (razor.approval, razor.approver) and approval.json in its run."""
    client = mlflow.MlflowClient()
    verdict = "approved" if answer.approve else "rejected"
    for key, value in (("razor.approval", verdict), ("razor.approver", answer.approver),
                       ("razor.approval_reason", answer.reason)):
        client.set_model_version_tag(name, version, key, value)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict(dict(approval=verdict, approver=answer.approver, reason=answer.reason,
                             answered=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")), "approval.json")


def answer(ws: Workspace, request_id: str, approve: bool, approver: str, reason: str) -> dict:
    """Resume the intake paused on `request_id` with an approver's answer; its queue entry."""
    check_server("razor approve")
    entry = next((e for e in queue.entries(ws) if e["id"] == request_id), None)
    if entry is None:
        raise RazorError(f"no request {request_id!r} was submitted; `razor request list` shows them")
    if entry["state"] != "running" or not entry["reason"].startswith(AWAITING):
        raise RazorError(f"request {request_id} is not awaiting approval (it is {entry['state']}: "
                         f"{entry['reason'] or 'no reason recorded'})")
    try:
        resume_flow_run(UUID(entry["flow_run_id"]), run_input=Approval(approve=approve, approver=approver,
                                                                        reason=reason).model_dump(mode="json"))
    except (NotPausedError, FlowPauseTimeout) as e:
        raise RazorError(f"the intake that ran {request_id} (flow run {entry['flow_run_id']}) no longer waits for an "
                         f"answer ({e}); `razor request list` shows what became of it") from e
    return entry
