"""The unlearn flow: one request through curate → cache → rank → edit → evaluate → attack.

Each stage is a Prefect task that runs `dvc repro --single-item <stage>@<request>`, so dvc.lock
records every run and an unchanged stage is skipped; its output streams into the task's log.
A stage that refuses its input (exit 2, "error: …") is not retried; any other failure is,
twice. Afterwards the run is recorded in MLflow (flows/lineage.py) and the edited model is
registered; re-running an unchanged request re-uses that record instead of writing another.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled

from flows import lineage, registry, results
from razor.errors import RazorError
from razor.io import atomic_path
from razor.request import RequestError, load_request
from stages.workspace import STAGES, Workspace


class StageRefused(RazorError):
    """A stage rejected its input; retrying cannot help."""


class StageFailed(RuntimeError):
    """A stage failed for another reason (retried)."""


class StageTimedOut(RazorError):
    """A stage ran past params.yaml flow.stage_timeout and was stopped (not retried: it would again)."""


# what `dvc repro` tells a person at its prompt (stage the lock file, push to a remote): the flow records and versions
# the results itself, so these lines are left out of its logs
DVC_HINTS = ("To track the changes with git", "git add ", "To enable auto staging", "dvc config core.autostage",
             "Use `dvc push`")


def _transient(task, task_run, state) -> bool:
    try:
        state.result()
    except (StageRefused, StageTimedOut):
        return False
    except Exception:  # noqa: BLE001 — any other failure may be transient
        return True
    return True


@task(name="stage", task_run_name="{stage}@{request_id}", retries=2, retry_delay_seconds=2,
      retry_condition_fn=_transient, cache_policy=NO_CACHE)
def run_stage(root: str, stage: str, request_id: str, parent_run: str) -> bool:
    """`dvc repro` one stage of one request, in a nested MLflow run of `parent_run` open while it runs;
    True if it ran, False if DVC skipped it."""
    logger = get_run_logger()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               DVC_NO_ANALYTICS="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    lines = []
    ws = Workspace(Path(root))
    limit = ws.flow_params().stage_timeout
    with ws.lock(), lineage.stage_run(parent_run, request_id, stage) as run_id:
        ws.clear_stale(request_id, stage)
        # a session of its own: a Ctrl-C at the terminal reaches this flow, which stops the stage itself
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", f"{stage}@{request_id}"],
                                cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        fired = threading.Event()
        timer = threading.Timer(limit, lambda: (fired.set(), stop(proc)))
        timer.start()
        try:
            for line in proc.stdout:
                lines.append(line.rstrip())
                if lines[-1].strip() and not lines[-1].strip().startswith(DVC_HINTS):
                    logger.info(lines[-1])
            proc.wait()
        except BaseException:  # interrupted: stop the stage and what it started, leave no temporary behind
            stop(proc)
            ws.clear_stale(request_id, stage)
            raise
        finally:
            timer.cancel()
        ran = not any("didn't change, skipping" in x for x in lines)
        lineage.log_stage(ws, run_id, request_id, stage, ran, "\n".join(lines), proc.returncode == 0)
        if fired.is_set() and proc.returncode != 0:
            ws.clear_stale(request_id, stage)
            raise StageTimedOut(f"stage {stage}@{request_id} ran past params.yaml flow.stage_timeout ({limit:g} s) and "
                                "was stopped, its output left unwritten; raise the timeout or find what hung")
    if proc.returncode != 0:
        refused = [x for x in lines if x.startswith("error: ")]
        if refused:
            raise StageRefused(refused[-1].removeprefix("error: "))
        raise StageFailed(f"stage {stage}@{request_id} failed (dvc exit {proc.returncode}): " + " | ".join(lines[-6:]))
    return ran


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a process group, SIGKILL it after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@task(name="lineage", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def record(root: str, request_id: str, ran: dict[str, bool], parent_run: str) -> tuple[str, str, str]:
    """Complete the request's MLflow record and register its version: (run id, registered model, its
    version); flows sharing a workspace write their records one at a time."""
    ws = Workspace(Path(root))
    with ws.lock():
        return _record(ws, request_id, ran, parent_run)


def _record(ws: Workspace, request_id: str, ran: dict[str, bool], parent_run: str) -> tuple[str, str, str]:
    entries = lineage.lock_entries(ws, request_id)
    digest = lineage.lock_digest(entries)
    if not any(ran.values()) and (previous := lineage.previous_run(ws, request_id, digest)):
        lineage.discard(parent_run)
        tags = mlflow.get_run(previous).data.tags
        return previous, tags["razor.registered_model"], tags["razor.model_version"]
    req = json.loads((ws.stage_dir(request_id, "curate") / "request.json").read_text())
    with mlflow.start_run(run_id=parent_run) as run:
        mlflow.set_tags({"razor.concept": req["concept_key"], "razor.method": req["method"], "razor.model": req["model"],
                         "razor.lock_digest": digest, **lineage.dvc_tags(entries)})
        mlflow.log_params({"request.id": request_id, "request.model": req["model"], "request.concept": req["concept_key"],
                           "request.method": req["method"], "request.seed": req["seed"],
                           **{f"request.params.{k}": v for k, v in req["params"].items()}})
        mlflow.log_artifact(str(ws.request_file(request_id)), "request")
        mlflow.log_artifact(str(ws.root / "dvc.lock"))
        lineage.log_datasets(ws, request_id)
        mlflow.log_metrics(lineage.flat_metrics(ws, request_id) | lineage.attack_metrics(ws, request_id))
        name, version = registry.register(ws, request_id, run.info.run_id, req)
        mlflow.set_tags({"razor.registered_model": name, "razor.model_version": version})
        results.publish(ws, request_id, run.info.run_id, name, version)
    return run.info.run_id, name, version


def admit(ws: Workspace, path: Path) -> str:
    """Place a request file at data/requests/<id>.yaml and list its id in params.yaml."""
    req = load_request(path)
    target = ws.request_file(req.id)
    if not target.exists():
        with atomic_path(target) as tmp:
            tmp.write_bytes(path.read_bytes())
    elif target.resolve() != path.resolve() and target.read_bytes() != path.read_bytes():
        raise RequestError(f"a different request with id {req.id!r} is already at {target}; give this request a new id")
    from ruamel.yaml import YAML

    yml = YAML(typ="rt")
    params_file = ws.root / "params.yaml"
    doc = yml.load(params_file.read_text())
    if req.id not in (doc.get("requests") or []):
        if doc.get("requests") is None:
            doc["requests"] = []
        doc["requests"].append(req.id)
        with atomic_path(params_file) as tmp, open(tmp, "w") as f:
            yml.dump(doc, f)
    return req.id


@flow(name="razor-unlearn", flow_run_name="unlearn {request}")
def unlearn(request: str, workspace: str = ".") -> dict:
    """Run one request file through the six stages and record it. Returns the request id, the
    stages DVC ran, the registered model, and the report (as `razor unlearn` gives it) with
    `mlflow_run_id` and `model_version`."""
    ws = Workspace(Path(workspace).resolve())
    if not (ws.root / "dvc.yaml").is_file():
        raise RazorError(f"{ws.root} has no dvc.yaml; run from the project root (or pass --workspace)")
    load_request(request)  # bad input is refused before the store is touched
    ws.params_doc()
    ws.check_writable()
    with ws.lock():  # one flow at a time creates a new store (SQLite migrations race) and edits params.yaml
        lineage.check_store(ws)
        request_id = admit(ws, Path(request))
    parent = lineage.open_run(ws, request_id)
    try:
        ran = {stage: run_stage(str(ws.root), stage, request_id, parent) for stage in STAGES}
        run_id, name, version = record(str(ws.root), request_id, ran, parent)
    except KeyboardInterrupt:  # Ctrl-C: the stage was stopped and left nothing; the flow run ends cancelled
        lineage.close(parent, "KILLED")
        return Cancelled(message=f"interrupted: {request_id} stopped before it finished, nothing registered; "
                                 "run it again to resume (finished stages are kept)")
    except BaseException:
        lineage.close(parent, "FAILED")
        raise
    report = json.loads((ws.stage_dir(request_id, "attack") / "report.json").read_text())
    report.pop("lineage", None)
    results.metrics(request_id, report, run_id, name, version)
    return dict(request=request_id, stages_run=[s for s in STAGES if ran[s]], registered_model=name,
                report=dict(report, mlflow_run_id=run_id, model_version=version))
