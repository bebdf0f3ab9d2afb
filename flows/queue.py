"""The request queue: data/queue/<id>.yaml (the request as submitted) and <id>.json (its state).

States: queued → running → done | refused | failed, each with the reason and, once known, the
model version it produced. A `running` entry records the process running it; if that process is
gone (killed, out of memory), the entry becomes `failed` with the reason (`reap`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
from pathlib import Path

from razor.data import read_manifest
from razor.errors import ModelError
from razor.families import DEMO_MODELS
from razor.io import atomic_path
from razor.request import Request, RequestError, load_request
from stages.workspace import Workspace

STATES = ("queued", "running", "done", "refused", "failed")


def folder(ws: Workspace) -> Path:
    return ws.data / "queue"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_model(ws: Workspace, spec: str) -> None:
    """The model must be a demo model, a model folder under the data root, or a hub id in the local
    cache, of a family RAZOR edits (read from its config files; no weights are loaded)."""
    if spec in DEMO_MODELS:
        return
    local = ws.data / spec
    try:
        ws.family(spec)  # a folder that resolves outside the data root is refused here too
    except ModelError as e:
        if local.exists():
            raise RequestError(f"model folder {local} cannot be used: {e}") from e
        raise RequestError(f"model {spec!r} is neither {', '.join(f'`{d}`' for d in DEMO_MODELS)}, a folder under "
                           f"{ws.data}, nor a hub id in the local cache; download it first or copy it under the data root") from e


def submit(ws: Workspace, path: Path) -> Request:
    """Validate a request file (schema, model, data, paths, id) and queue it; submits side by side
    take turns at the queue, so each id is taken once."""
    req = load_request(path)
    check_model(ws, req.model)
    for which in ("forget_data", "retain_data"):
        if (found := req.data_path(which, ws.data)) is not None:  # present and inside the data root
            read_manifest(found, verify=False, within=ws.data)  # and so are its images
    if req.forget_data is None and ws.root_model(req.model) not in DEMO_MODELS:
        raise RequestError(f"request {req.id}: forget_data is required for model {req.model!r}")
    with ws.lock("queue"):
        if (folder(ws) / f"{req.id}.json").exists() or ws.request_file(req.id).exists():
            raise RequestError(f"request id {req.id!r} was already submitted; give the new request its own id")
        with atomic_path(folder(ws) / f"{req.id}.yaml") as tmp:
            shutil.copyfile(path, tmp)
        seq = 1 + max((e["seq"] for e in entries(ws) if e["seq"] is not None), default=0)
        write(ws, req.id, dict(id=req.id, seq=seq, state="queued", reason="", submitted=now(), updated=now()))
    return req


def write(ws: Workspace, request_id: str, entry: dict) -> None:
    with atomic_path(folder(ws) / f"{request_id}.json") as tmp:
        tmp.write_text(json.dumps(entry, indent=2))


def entries(ws: Workspace) -> list[dict]:
    """Every request ever submitted, oldest first; an entry that cannot be read is listed as
    `unreadable`, with the fix, after the others."""
    return sorted((entry(p) for p in folder(ws).glob("*.json")), key=lambda e: (e["seq"] is None, e["seq"] or 0, e["id"]))


def entry(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
        if isinstance(found, dict) and {"id", "seq", "state"} <= set(found):
            return found
        problem = "not a queue entry"
    except (OSError, ValueError) as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
    return dict(id=path.stem, seq=None, state="unreadable", submitted="", updated="",
                reason=f"{path} cannot be read ({problem}); delete it and submit the request again")


def set_state(ws: Workspace, request_id: str, state: str, reason: str = "", **extra) -> dict:
    entry = json.loads((folder(ws) / f"{request_id}.json").read_text())
    entry.update(extra, state=state, reason=reason, updated=now())
    write(ws, request_id, entry)
    return entry


def take(ws: Workspace, request_id: str) -> bool:
    """Mark a queued request running by this process; False if another intake took it first."""
    with ws.lock("queue"):
        if json.loads((folder(ws) / f"{request_id}.json").read_text())["state"] != "queued":
            return False
        set_state(ws, request_id, "running", pid=os.getpid(), host=socket.gethostname())
        return True


def reap(ws: Workspace) -> list[str]:
    """Entries left `running` by a process of this machine that no longer exists become `failed`."""
    gone = []
    with ws.lock("queue"):
        for e in entries(ws):
            if e["state"] == "running" and e.get("host") == socket.gethostname() and not alive(e.get("pid")):
                set_state(ws, e["id"], "failed", f"the process that ran it (pid {e.get('pid')}) ended before it finished "
                                                 "(killed or out of memory); nothing was promoted — submit it again "
                                                 "under a new id")
                gone.append(e["id"])
    return gone


def alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def submitted(ws: Workspace, request_id: str) -> Request:
    return load_request(folder(ws) / f"{request_id}.yaml")
