"""Scale-out on a real engine: `prefect server`, a process work pool and worker, three requests (two
on one model, one on another) as deployment runs at the same time into one workspace: all complete,
none clobbers another, and each gives what it gives alone (`razor run`, one after another)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import SyncPrefectClient

from flows.schedule import healthy
from razor.data import read_manifest, write_manifest
from razor.delta import Delta
from stages.workspace import STAGES
from tests.workspace import ROOT, make_workspace, small_params

pytestmark = pytest.mark.stack

PARAMS = small_params()


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
        for _ in range(240):  # the API's health endpoint, polled cheaply (a `prefect` CLI call costs ~2 s of CPU)
            if healthy(env["PREFECT_API_URL"]):
                break
            time.sleep(0.5)
        else:
            pytest.fail("prefect server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
        yield env
    finally:
        stop(proc)


REQUESTS = {"scale-star": ("demo", "object, label: star", None),
            "scale-dotted": ("demo", "style, label: dotted", None),
            "scale-hana": ("models/demo-b", "identity, label: hana", "world.parquet")}
ALONE = ("scale-star", "scale-hana")  # run again one after another, in a workspace of their own


def workspace(path: Path, world) -> Path:
    """A workspace at small sets with a second model (a copy of the demo's) and the world embedded as its data."""
    ws = make_workspace(path, params=PARAMS, requests=False)
    shutil.copytree(ROOT / "razor/demo/model", ws / "data/models/demo-b")
    write_manifest([dict(r, image=world.image_bytes(r)) for r in world.rows], ws / "data/world.parquet", world.axes,
                   world.prompts, labels=world.labels())
    return ws


def deployment_runs(env, ws: Path, requests: list[Path], log: Path) -> None:
    """The unlearn flow deployed to a process work pool, each request a deployment run that one worker
    picks up (all at once), into the same workspace; every run must complete."""
    assert prefect(env, "work-pool", "create", "razor-pool", "--type", "process").returncode == 0
    deploy = ("from prefect import flow\n"
              f"flow.from_source(source={str(ROOT)!r}, entrypoint='flows/unlearn.py:unlearn')"
              ".deploy(name='unlearn', work_pool_name='razor-pool')\n")
    out = subprocess.run([sys.executable, "-c", deploy], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "razor-pool"], env=env,
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ids = []
        for path in requests:
            out = prefect(env, "deployment", "run", "razor-unlearn/unlearn", "-p", f"request={path}", "-p", f"workspace={ws}")
            assert out.returncode == 0, out.stderr[-2000:]
            ids.append(next(w for w in out.stdout.split() if len(w) == 36 and w.count("-") == 4))
        states = {}
        with SyncPrefectClient(env["PREFECT_API_URL"]) as client:  # in this process: polling costs the runs no CPU
            for _ in range(900):
                states = {i: client.read_flow_run(UUID(i)).state.type.value for i in ids}
                if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states.values()):
                    break
                time.sleep(1)
        assert set(states.values()) == {"COMPLETED"}, (states, log.read_text()[-4000:])
    finally:
        stop(worker)


def razor_runs(env, ws: Path, requests: list[Path]) -> None:
    """`razor run` each request file against the server in `env`, one after another."""
    for p in requests:
        out = subprocess.run([shutil.which("razor", path=env["PATH"]), "run", str(p), "--workspace", str(ws), "--json"],
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout.strip().splitlines()[-1])["model_version"] == "1"  # each model its own registry entry


def test_requests_as_deployment_runs_at_once_on_a_worker_equal_sequential_runs(server, tmp_path, demo_manifest):
    """Three requests, two on the demo model and one on a copy with data of its own, as deployment runs a
    worker runs at the same time into one workspace: all complete, none clobbers another (two register
    versions of one model at once), and each gives exactly what `razor run` gives for it alone."""
    requests = []
    for rid, (model, concept, data) in REQUESTS.items():
        requests.append(tmp_path / f"{rid}.yaml")
        requests[-1].write_text(f"id: {rid}\nmodel: {model}\nconcept: {{kind: {concept}}}\nmethod: slug\n"
                                + (f"forget_data: {data}\n" if data else ""))
    world = read_manifest(demo_manifest, verify=False)
    together, sequential = workspace(tmp_path / "together", world), workspace(tmp_path / "sequential", world)
    deployment_runs(server, together, requests, tmp_path / "worker.log")
    razor_runs(server, sequential, [p for p in requests if p.stem in ALONE])

    lock = yaml.safe_load((together / "dvc.lock").read_text())["stages"]
    mlflow.set_tracking_uri(f"sqlite:///{together / 'mlflow.db'}")
    client = MlflowClient()
    for rid in REQUESTS:
        assert {f"{s}@{rid}" for s in STAGES} <= set(lock)
        runs = [ws / "data/runs" / rid for ws in (together, sequential)]
        assert yaml.safe_load((runs[0] / "evaluate" / "report.json").read_text())["method"] == "slug"
        assert client.search_runs([client.get_experiment_by_name("razor").experiment_id],
                                  f"tags.`razor.request` = '{rid}' and tags.mlflow.runName = '{rid}'")
        assert not [p for p in runs[0].rglob(".*") if p.name != ".gitignore"]  # no temporary left behind
        if rid not in ALONE:
            continue
        deltas = [Delta.load(r / "edit/delta.safetensors") for r in runs]  # meta["base"] names each workspace's model
        assert deltas[0].slices == deltas[1].slices and deltas[0].edited_sha256 == deltas[1].edited_sha256
        assert all(torch.equal(a, b) for a, b in zip(deltas[0].values, deltas[1].values))
        after = [json.loads((r / "evaluate/report.json").read_text())["after"] for r in runs]
        assert after[0] == after[1]
    assert sorted(yaml.safe_load((together / "params.yaml").read_text())["requests"]) == sorted(REQUESTS)
    parents = client.search_runs([client.get_experiment_by_name("razor").experiment_id], "tags.`razor.request` != ''")
    assert sorted(r.data.tags["razor.request"] for r in parents if "mlflow.parentRunId" not in r.data.tags) == sorted(REQUESTS)
    versions = client.search_model_versions("")
    assert sorted((v.name, v.tags["razor.request"]) for v in versions) == [
        ("clip-demo", "scale-dotted"), ("clip-demo", "scale-star"), ("clip-models-demo-b", "scale-hana")]
    assert sorted(int(v.version) for v in versions if v.name == "clip-demo") == [1, 2]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group; SIGKILL it if it is still there after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
