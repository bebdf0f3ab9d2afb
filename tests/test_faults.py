"""Injected faults: a write that fails midway, a process killed while holding the workspace, the
MLflow tracking store unreachable. Each leaves nothing a later step could take for a result."""

import errno
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import razor.data
from flows import lineage
from razor.io import atomic_path
from stages import curate
from stages.workspace import LockTimeout, Workspace
from tests.workspace import ROOT, changed_params, dvc_env, make_workspace

REQUEST = "demo-object-star"


def disk_full_after_half(write):
    """A writer that writes half of what it should, then fails as a full disk does."""
    def failing(table, where, *args, **kwargs):
        write(table, where, *args, **kwargs)
        data = Path(where).read_bytes()
        Path(where).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(where))
    return failing


def test_a_stage_whose_write_fails_midway_leaves_no_result(tmp_path, demo_manifest, monkeypatch):
    ws = Workspace(make_workspace(tmp_path / "ws"))
    monkeypatch.setattr(razor.data.pq, "write_table", disk_full_after_half(pq.write_table))
    with pytest.raises(OSError, match="No space left"):
        curate.run(ws, REQUEST)
    run = ws.run_dir(REQUEST)
    assert not (run / "curate").exists()
    assert not list(run.rglob("*.parquet")) and not list(run.glob(".curate.*"))


def test_a_file_write_that_fails_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"fa1": 0.05}')
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"fa1": 0.')
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == '{"fa1": 0.05}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def lock_holder(root, what: str = "workspace") -> subprocess.Popen:
    """Another process that takes the workspace's `what` lock and keeps it (until killed)."""
    (root / ".dvc").mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom stages.workspace import Workspace\n"
         f"with Workspace(Path({str(root)!r})).lock({what!r}):\n    print('locked', flush=True)\n    time.sleep(600)\n"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=dvc_env())
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_killed_process_never_leaves_the_workspace_locked(tmp_path):
    holder = lock_holder(tmp_path)
    taken = threading.Event()

    def take():
        with Workspace(tmp_path).lock():
            taken.set()

    waiter = threading.Thread(target=take, daemon=True)
    waiter.start()
    assert not taken.wait(2)  # held
    holder.kill()
    holder.wait()
    assert taken.wait(30)  # the OS released it with the process


def test_a_lock_held_too_long_is_refused_naming_its_holder(tmp_path):
    holder = lock_holder(tmp_path, "queue")
    try:
        with pytest.raises(LockTimeout, match=rf"the queue lock .* is still held after 1 s, by pid {holder.pid} on "):
            with Workspace(tmp_path).lock("queue", timeout=1):
                pass
        with Workspace(tmp_path).lock("store", timeout=1):  # the other locks are free
            pass
    finally:
        holder.kill()
        holder.wait()
    with Workspace(tmp_path).lock("queue", timeout=5):
        pass


def test_a_lock_waits_as_long_as_params_yaml_says(tmp_path, monkeypatch):
    monkeypatch.delenv("RAZOR_LOCK_TIMEOUT", raising=False)
    (tmp_path / "params.yaml").write_text("flow:\n  lock_timeout: 1\n")
    holder = lock_holder(tmp_path)
    try:
        with pytest.raises(LockTimeout, match=rf"still held after 1 s, by pid {holder.pid} "):
            with Workspace(tmp_path).lock():
                pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.stack
def test_a_stage_past_its_timeout_is_stopped_not_retried_and_leaves_nothing(tmp_path, prefect_server, caplog):
    from flows.unlearn import StageTimedOut, unlearn

    ws = make_workspace(tmp_path / "ws", params=changed_params({"stage_timeout: 7200": "stage_timeout: 0.5"}),
                        requests=False)
    with pytest.raises(StageTimedOut, match=rf"curate@{REQUEST} ran past params.yaml flow.stage_timeout \(0.5 s\)"):
        unlearn(str(ROOT / "data/requests" / f"{REQUEST}.yaml"), str(ws))
    assert not (ws / "data/runs" / REQUEST / "curate").exists() and not list((ws / "data/runs").glob(f"{REQUEST}/.curate.*"))
    assert not [r for r in caplog.records if "Retry" in r.getMessage()]


@pytest.mark.stack
def test_an_unreachable_tracking_store_stops_the_request_before_any_work(tmp_path, monkeypatch, prefect_server):
    from flows.unlearn import unlearn

    ws = make_workspace(tmp_path / "ws", requests=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setattr(lineage, "USER_TRACKING_URI", f"http://127.0.0.1:{port}")
    params = (ws / "params.yaml").read_text()
    with pytest.raises(lineage.StoreUnreachable, match=f"127.0.0.1:{port} cannot be reached.*nothing was run"):
        unlearn(str(ROOT / "data/requests" / f"{REQUEST}.yaml"), str(ws))
    assert (ws / "params.yaml").read_text() == params
    assert not (ws / "data/requests").exists() and not (ws / "data/runs").exists() and not (ws / "dvc.lock").exists()
