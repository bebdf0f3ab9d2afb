"""`razor serve`: the intake flow as a Prefect deployment on a schedule, one intake at a time.

Scheduling takes a Prefect server (an ephemeral one runs no scheduler): PREFECT_API_URL's, or one
`razor serve --start-server` starts beside it and stops with it. The deployment's concurrency limit
is 1 and a run that finds another intake running is cancelled (the next one takes what is queued).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import httpx
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.unlearn import stop
from razor.errors import RazorError
from stages.workspace import Workspace

NO_SERVER = ("razor serve schedules intakes, which takes a Prefect server (the ephemeral one runs no scheduler): start "
             "one with `prefect server start`, then `PREFECT_API_URL=http://127.0.0.1:4200/api razor serve …`; or run "
             "`razor serve --start-server …` to have razor start one and stop it with the serve; nothing was started")


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def local_server(ws: Workspace, port: int, wait: float = 180.0):
    """`prefect server start` on 127.0.0.1:`port` (Prefect's own home and database, so its UI keeps the
    history), its log in .dvc/tmp/prefect-server.log; yields its API URL and stops it on exit."""
    url = f"http://127.0.0.1:{port}/api"
    if healthy(url):
        raise RazorError(f"a Prefect server already answers at {url}; use it (PREFECT_API_URL={url} razor serve …) "
                         "or give --port another port")
    log_path = ws.root / ".dvc" / "tmp" / "prefect-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + wait
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RazorError(f"the local Prefect server did not start (see {log_path}): "
                                 + " | ".join(log_path.read_text().strip().splitlines()[-3:]))
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)


def serve(ws: Workspace, interval: float | None, cron: str | None) -> None:
    """Serve the intake on the configured server until stopped (Ctrl-C)."""
    from flows.intake import intake

    if not PREFECT_API_URL.value():
        raise RazorError(NO_SERVER)
    intake.serve(name="razor-intake", parameters={"workspace": str(ws.root)}, interval=interval, cron=cron, limit=1,
                 global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
                 description="Run every queued request (razor request submit) through unlearn and the gate; "
                             "promote the versions that pass.")


def serve_with_server(ws: Workspace, port: int, interval: float | None, cron: str | None) -> None:
    """Start a local Prefect server, serve the intake on it, stop the server when the serve ends."""
    with local_server(ws, port) as url:
        os.environ["PREFECT_API_URL"] = url  # the runner's flow-run processes inherit it
        with temporary_settings(updates={PREFECT_API_URL: url}):
            print(f"Prefect server: {url.removesuffix('/api')} (the UI; its log: {ws.root / '.dvc/tmp/prefect-server.log'})")
            serve(ws, interval, cron)
