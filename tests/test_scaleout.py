"""Scale-out on a real engine: `prefect server`, a process work pool and worker, three requests as
deployment runs into one workspace; all complete and none clobbers another. Concurrency: two
requests on different models as flow runs at the same time give what they give one after another."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient

from razor.data import read_manifest, write_manifest
from razor.delta import Delta
from stages.workspace import STAGES
from tests.workspace import ROOT, make_workspace, small_params

pytestmark = pytest.mark.stack

PARAMS = small_params()
REQUESTS = {"scale-star": "object, label: star", "scale-dotted": "style, label: dotted", "scale-hana": "identity, label: hana"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect(env, *args, **kw):
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True, **kw)


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PREFECT_PROFILES_PATH", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # each flow run records into its workspace's own store
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(120):
            if prefect(env, "work-pool", "ls").returncode == 0:
                break
            time.sleep(1)
        else:
            pytest.fail("prefect server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
        yield env
    finally:
        stop(proc)


def test_three_requests_as_deployment_runs_on_a_worker(server, tmp_path, demo_manifest):
    ws = make_workspace(tmp_path / "ws", params=PARAMS, requests=False)
    assert prefect(server, "work-pool", "create", "razor-pool", "--type", "process").returncode == 0
    deploy = ("from prefect import flow\n"
              f"flow.from_source(source={str(ROOT)!r}, entrypoint='flows/unlearn.py:unlearn')"
              ".deploy(name='unlearn', work_pool_name='razor-pool')\n")
    out = subprocess.run([sys.executable, "-c", deploy], env=server, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    for rid, concept in REQUESTS.items():
        (tmp_path / f"{rid}.yaml").write_text(f"id: {rid}\nmodel: demo\nconcept: {{kind: {concept}}}\nmethod: slug\n")
    worker_log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "razor-pool"], env=server,
                              stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ids = []
        for rid in REQUESTS:
            out = prefect(server, "deployment", "run", "razor-unlearn/unlearn", "-p", f"request={tmp_path / f'{rid}.yaml'}",
                          "-p", f"workspace={ws}")
            assert out.returncode == 0, out.stderr[-2000:]
            ids.append(next(w for w in out.stdout.split() if len(w) == 36 and w.count("-") == 4))
        states = {}
        for _ in range(180):
            states = {i: flow_run_state(server, i) for i in ids}
            if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states.values()):
                break
            time.sleep(5)
        assert set(states.values()) == {"COMPLETED"}, (states, (tmp_path / "worker.log").read_text()[-4000:])
    finally:
        stop(worker)

    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    client = MlflowClient()
    for rid in REQUESTS:
        assert {f"{s}@{rid}" for s in STAGES} <= set(lock)
        report = (ws / "data/runs" / rid / "evaluate" / "report.json")
        assert report.is_file() and yaml.safe_load(report.read_text())["method"] == "slug"
        assert client.search_runs([client.get_experiment_by_name("razor").experiment_id],
                                  f"tags.`razor.request` = '{rid}' and tags.mlflow.runName = '{rid}'")
    assert sorted(yaml.safe_load((ws / "params.yaml").read_text())["requests"]) == sorted(REQUESTS)
    versions = client.search_model_versions("name = 'clip-demo'")
    assert sorted(v.tags["razor.request"] for v in versions) == sorted(REQUESTS)


CONCURRENT = {"conc-star": ("demo", "object, label: star", None),
              "conc-hana": ("models/demo-b", "identity, label: hana", "world.parquet")}


def razor_runs(env, ws, requests: list, together: bool) -> dict:
    """`razor run` each request file against the server in `env`, all at once or one after another."""
    cmd = [shutil.which("razor", path=env["PATH"]), "run", "--workspace", str(ws), "--json"]
    results = {}
    if together:
        procs = {p: subprocess.Popen([*cmd[:2], str(p), *cmd[2:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for p in requests}
        outs = {p: proc.communicate() + (proc.returncode,) for p, proc in procs.items()}
    else:
        outs = {}
        for p in requests:
            out = subprocess.run([*cmd[:2], str(p), *cmd[2:]], env=env, capture_output=True, text=True)
            outs[p] = (out.stdout, out.stderr, out.returncode)
    for p, (stdout, stderr, rc) in outs.items():
        assert rc == 0, stderr[-3000:]
        results[p.stem] = json.loads(stdout.strip().splitlines()[-1])
    return results


def test_two_requests_on_different_models_at_once_equal_sequential_runs(server, tmp_path, demo_manifest):
    requests = []
    for rid, (model, concept, data) in CONCURRENT.items():
        requests.append(tmp_path / f"{rid}.yaml")
        requests[-1].write_text(f"id: {rid}\nmodel: {model}\nconcept: {{kind: {concept}}}\nmethod: slug\n"
                                + (f"forget_data: {data}\n" if data else ""))
    world = read_manifest(demo_manifest, verify=False)  # a model other than demo names its data: the world, embedded
    rows = [dict(r, image=world.image_bytes(r)) for r in world.rows]
    spaces = {}
    for mode in ("together", "sequential"):
        ws = spaces[mode] = make_workspace(tmp_path / mode, params=PARAMS, requests=False)
        shutil.copytree(ROOT / "razor/demo/model", ws / "data/models/demo-b")
        write_manifest(rows, ws / "data/world.parquet", world.axes, world.prompts, labels=world.labels())
        reports = razor_runs(server, ws, requests, together=mode == "together")
        assert {r["model_version"] for r in reports.values()} == {"1"}  # each request its own registered model
    for rid in CONCURRENT:
        runs = [spaces[m] / "data/runs" / rid for m in ("together", "sequential")]
        deltas = [Delta.load(r / "edit/delta.safetensors") for r in runs]  # meta["base"] names each workspace's model
        assert deltas[0].slices == deltas[1].slices and deltas[0].edited_sha256 == deltas[1].edited_sha256
        assert all(torch.equal(a, b) for a, b in zip(deltas[0].values, deltas[1].values))
        after = [json.loads((r / "evaluate/report.json").read_text())["after"] for r in runs]
        assert after[0] == after[1]
        assert not [p for p in runs[0].rglob(".*") if p.name != ".gitignore"]  # no temporary left behind
    mlflow.set_tracking_uri(f"sqlite:///{spaces['together'] / 'mlflow.db'}")
    client = MlflowClient()
    parents = client.search_runs([client.get_experiment_by_name("razor").experiment_id], "tags.`razor.request` != ''")
    assert sorted(r.data.tags["razor.request"] for r in parents if "mlflow.parentRunId" not in r.data.tags) == sorted(CONCURRENT)
    names = {v.name for v in client.search_model_versions("")}
    assert names == {"clip-demo", "clip-models-demo-b"}


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group; SIGKILL it if it is still there after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def flow_run_state(env, flow_run_id: str) -> str:
    found = re.search(r"StateType\.([A-Z]+)", prefect(env, "flow-run", "inspect", flow_run_id).stdout)
    return found.group(1) if found else "UNKNOWN"
