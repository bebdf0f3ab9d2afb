"""`razor serve`: refused at once with no Prefect server to schedule on; with `--start-server`, a real
local server runs a scheduled intake that takes a queued request, waits for an approver
(gate.approval: required) and promotes the version once `razor approve` answers, one intake at a time."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import mlflow
import pytest
from click.testing import CliRunner
from prefect.client.orchestration import SyncPrefectClient
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.schedule import healthy
from razor.cli import main
from tests.test_scaleout import free_port, stop
from tests.workspace import NO_ATTACKS, changed_params, make_workspace

REQUEST = "serve-star"


def razor(env, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("razor", path=env["PATH"]), *args], env=env, capture_output=True, text=True, **kw)


def entry(ws: Path) -> dict:
    path = ws / "data/queue" / f"{REQUEST}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def wait_for(ws: Path, done, log: Path, seconds: float = 900) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        e = entry(ws)
        if done(e):
            return e
        assert e.get("state") not in ("refused", "failed"), (e, log.read_text()[-4000:])
        time.sleep(2)
    pytest.fail(f"{REQUEST} still {entry(ws)} after {seconds} s: " + log.read_text()[-4000:])


def test_serve_without_a_server_refuses_at_once_with_the_command_to_start_one(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path / "ws", requests=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # whatever server another test's harness started
        out = CliRunner().invoke(main, ["serve", "--interval", "60", "--workspace", str(ws)])
        assert out.exit_code == 2 and "prefect server start" in out.output and "--start-server" in out.output, out.output
        out = CliRunner().invoke(main, ["approve", REQUEST, "--by", "alice", "--workspace", str(ws)])
        assert out.exit_code == 2 and "prefect server start" in out.output, out.output


@pytest.mark.stack
def test_a_scheduled_intake_waits_for_an_approver_then_promotes(tmp_path, demo_manifest):
    ws = make_workspace(tmp_path / "ws", params=changed_params({**NO_ATTACKS, "approval: none": "approval: required"}),
                       requests=False)
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for name in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    request = tmp_path / f"{REQUEST}.yaml"
    request.write_text(f"id: {REQUEST}\nmodel: demo\nconcept: {{kind: object, label: star}}\n")
    out = razor(env, "request", "submit", str(request), "--workspace", str(ws))
    assert out.returncode == 0, out.stderr

    log = tmp_path / "serve.log"
    serve = subprocess.Popen([shutil.which("razor", path=env["PATH"]), "serve", "--start-server", "--port", str(port),
                              "--interval", "5", "--workspace", str(ws)], env=env, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
    api = dict(env, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    try:
        waiting = wait_for(ws, lambda e: e.get("reason", "").startswith("awaiting approval"), log)
        assert waiting["state"] == "running" and f"razor approve {REQUEST}" in waiting["reason"]
        out = razor(api, "approve", REQUEST, "--by", "alice", "--reason", "report read", "--workspace", str(ws))
        assert out.returncode == 0, out.stderr
        done = wait_for(ws, lambda e: e.get("state") == "done", log, 300)

        with SyncPrefectClient(api["PREFECT_API_URL"]) as client:
            deployment = client.read_deployment_by_name("razor-intake/razor-intake")
            assert deployment.global_concurrency_limit.limit == 1  # one intake at a time
            states = [s.type.value for s in client.read_flow_run_states(UUID(waiting["flow_run_id"]))]
            assert "PAUSED" in states and states[-1] == "COMPLETED", states
    finally:
        stop(serve)
    assert not healthy(api["PREFECT_API_URL"])  # the server it started stopped with it

    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    c = mlflow.MlflowClient()
    version = c.get_model_version(done["registered_model"], done["model_version"])
    assert version.tags["razor.approval"] == "approved" and version.tags["razor.approver"] == "alice"
    assert version.tags["razor.approval_reason"] == "report read"
    assert str(c.get_model_version_by_alias(done["registered_model"], "production").version) == done["model_version"]


def test_an_intake_takes_a_queued_request_only_once(tmp_path):
    from flows import queue
    from stages.workspace import Workspace

    ws = Workspace(make_workspace(tmp_path / "ws", requests=False))
    request = tmp_path / f"{REQUEST}.yaml"
    request.write_text(f"id: {REQUEST}\nmodel: demo\nconcept: {{kind: object, label: star}}\n")
    queue.submit(ws, request)
    assert [queue.take(ws, REQUEST) for _ in range(2)] == [True, False]  # the second intake leaves it to the first
    assert entry(ws.root)["state"] == "running" and entry(ws.root)["pid"] == os.getpid()
