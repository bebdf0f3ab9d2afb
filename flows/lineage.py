"""MLflow lineage of one request: a parent run, a nested run per stage (each open while it runs), datasets, tags.

Default store: sqlite:///<workspace>/mlflow.db with artifacts under <workspace>/mlartifacts
(MLFLOW_TRACKING_URI overrides the store). Nothing here changes a stage's outputs. A store that
cannot be reached stops a request before any work (check_store): a run without its record is
worse than no run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import yaml
from mlflow import MlflowClient
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from razor.errors import RazorError
from stages.workspace import Workspace

EXPERIMENT = "razor"
STAGE_ARTIFACTS = {
    "curate": ("request.json", "stage.json"),
    "cache": ("stage.json",),
    "rank": ("scores.parquet", "selection.json", "stage.json"),
    "edit": ("delta.safetensors", "rounds.parquet", "stage.json"),
    "evaluate": ("report.json", "report.html", "stage.json"),
    "attack": ("attacks.json", "report.json", "report.html", "stage.json"),
}
STAGE_PLOTS = {"rank": ("scores.png",), "edit": ("expansion_trace.png", "edited_scores.png"), "evaluate": ("before_after.png", "image_grid.png"),
               "attack": ("attacks.png",)}
ROUND_METRICS = ("fa_val", "retain_val", "accuracy_val", "concept_p_val")


# The user's store, if any, as set when razor started (mlflow.set_tracking_uri below also sets
# this variable, which must not leak one workspace's store into the next).
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(ws: Workspace) -> str:
    return USER_TRACKING_URI or f"sqlite:///{ws.root / 'mlflow.db'}"


class StoreUnreachable(RazorError):
    """The MLflow tracking store cannot be reached."""


def check_store(ws: Workspace) -> None:
    """Refuse to start when the tracking store does not answer (one try, $RAZOR_SERVICE_TIMEOUT seconds
    at most, default 10)."""
    uri = tracking_uri(ws)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                      MLFLOW_HTTP_REQUEST_TIMEOUT=os.environ.get("RAZOR_SERVICE_TIMEOUT", "10"))
    try:
        with ws.lock("store"):  # a new SQLite store is created (migrated) by one process at a time
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 — any failure to answer means the same to the user
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise StoreUnreachable(f"the MLflow tracking store {uri} cannot be reached ({reason}); start it, or unset "
                               "MLFLOW_TRACKING_URI to record into the workspace's mlflow.db — nothing was run") from e
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def experiment(ws: Workspace) -> str:
    """The experiment id, created with an explicit artifact location if new."""
    mlflow.set_tracking_uri(tracking_uri(ws))
    with ws.lock("store"):  # a new SQLite store and its experiment are created by one process at a time
        found = mlflow.get_experiment_by_name(EXPERIMENT)
        if found is None:
            mlflow.create_experiment(EXPERIMENT, (ws.root / "mlartifacts").as_uri())
            found = mlflow.get_experiment_by_name(EXPERIMENT)
    mlflow.set_experiment(experiment_id=found.experiment_id)
    return found.experiment_id


def lock_entries(ws: Workspace, request_id: str) -> dict:
    """This request's stages as dvc.lock records them."""
    path = ws.root / "dvc.lock"
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.is_file() else {}
    return {k: v for k, v in stages.items() if k.endswith(f"@{request_id}")}


def lock_digest(entries: dict) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


WRITTEN = ("dvc.lock", "params.yaml", "results")  # tracked files the pipeline itself writes (stage records, the request
# list, the metrics and plots DVC compares)


def git_commit(ws: Workspace) -> str:
    """The workspace's commit, "-dirty" when tracked files other than those the pipeline writes differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws.root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){f}" for f in WRITTEN)], cwd=ws.root, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def previous_run(ws: Workspace, request_id: str, digest: str) -> str | None:
    """A finished run of this request whose stages had exactly these dvc.lock records."""
    runs = mlflow.search_runs([experiment(ws)], filter_string=(
        f"tags.`razor.request` = '{request_id}' and tags.`razor.lock_digest` = '{digest}' and attributes.status = 'FINISHED'"),
        output_format="list", max_results=1)
    return runs[0].info.run_id if runs else None


def dvc_tags(entries: dict) -> dict:
    """dvc.<stage>.<dep> → md5 of every input each stage recorded."""
    tags = {}
    for name, entry in entries.items():
        stage = name.split("@")[0]
        for dep in entry.get("deps", []):
            tags[f"dvc.{stage}.{dep['path'].split('/')[-1]}"] = dep.get("md5", "")
        for out in entry.get("outs", []):
            tags[f"dvc.{stage}.out.{out['path'].split('/')[-1]}"] = out.get("md5", "")
    return tags


def open_run(ws: Workspace, request_id: str) -> str:
    """The request's parent run, opened before its first stage (tagged with the commit it starts from)."""
    exp = experiment(ws)  # points MLflow at the workspace's store first
    run = MlflowClient().create_run(exp, run_name=request_id, tags={"razor.request": request_id, "git.commit": git_commit(ws)})
    return run.info.run_id


def close(run_id: str, status: str) -> None:
    """End a run that did not finish (FAILED, or KILLED when interrupted)."""
    MlflowClient().set_terminated(run_id, status)


def discard(run_id: str) -> None:
    """Delete a parent run and its stage runs (a re-run that changed nothing keeps its earlier record)."""
    client = MlflowClient()
    run = client.get_run(run_id)
    for child in client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"):
        client.delete_run(child.info.run_id)
    client.delete_run(run_id)


@contextlib.contextmanager
def stage_run(parent: str, request_id: str, stage: str):
    """The nested run of one stage, open while it runs (with MLflow's system metrics); yields its id.
    It ends FAILED if the block raises, else stays open for `log_stage` to fill and close."""
    client = MlflowClient()
    run = client.create_run(client.get_run(parent).info.experiment_id, run_name=stage,
                            tags={"mlflow.parentRunId": parent, "razor.stage": stage, "razor.request": request_id})
    monitor = SystemMetricsMonitor(run.info.run_id, sampling_interval=2)
    monitor.start()
    try:
        yield run.info.run_id
    except BaseException as e:
        client.set_terminated(run.info.run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        monitor.finish()


def log_stage(ws: Workspace, run_id: str, request_id: str, stage: str, ran: bool, log: str, ok: bool) -> None:
    """Fill one stage's run (its log; if it finished, its params, metrics, artifacts) and end it."""
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text(log, "stage.log")
        mlflow.set_tag("dvc.skipped", str(not ran).lower())
        if not ok:
            mlflow.end_run("FAILED")
            return
        folder = ws.stage_dir(request_id, stage)
        info = ws.stage_info(request_id, stage)
        mlflow.set_tags(dvc_tags({stage: lock_entries(ws, request_id).get(f"{stage}@{request_id}", {})}))
        params = info.get("params") or {}
        if params:
            mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items()})
        mlflow.log_metrics({k: info[k] for k in ("seconds", "peak_mb") if k in info}
                           | {f"probes_{k}": n for k, n in (info.get("probes") or {}).items()}
                           | ({"forget_target": info["target"]["value"]} if info.get("target") else {}))
        if info.get("target"):
            mlflow.set_tag("razor.forget_target_source", info["target"]["source"])
        for name in STAGE_ARTIFACTS[stage]:
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name), stage)
        for name in STAGE_PLOTS.get(stage, ()):
            if ws.plot(request_id, name).is_file():
                mlflow.log_artifact(str(ws.plot(request_id, name)), "plots")
        if stage == "curate":
            log_datasets(ws, request_id)
        if stage == "edit" and (folder / "rounds.parquet").is_file():
            for step, row in enumerate(pq.read_table(folder / "rounds.parquet").to_pylist()):
                mlflow.log_metrics({k: row[k] for k in ROUND_METRICS if k in row}, step=step)
        if stage == "evaluate":
            mlflow.log_metrics(flat_metrics(ws, request_id))
        if stage == "attack":
            log_attacks(json.loads((folder / "attacks.json").read_text()))


def flat_metrics(ws: Workspace, request_id: str) -> dict:
    m = json.loads((ws.results_dir(request_id) / "metrics.json").read_text())
    out = {f"{when}_{k}": v for when in ("before", "after") for k, v in m[when].items()}
    return out | {k: m[k] for k in ("seconds", "peak_mb", "delta_bytes")}


def attack_metrics(ws: Workspace, request_id: str) -> dict:
    """The attack stage's ASRs as `attack_<name>_asr`, `…_base_asr`, `…_oracle_asr`."""
    asr = json.loads((ws.results_dir(request_id) / "attacks.json").read_text())
    return {f"attack_{n}_{k}": v for n, a in asr.items() for k, v in a.items()}


def log_attacks(attacks: dict) -> None:
    """Each attack's ASRs; an attack measured after several step budgets as a curve over its steps."""
    for name, a in attacks.items():
        for i, point in enumerate(a["curve"]):
            step = point["budget"].get("steps", i)
            mlflow.log_metrics({f"attack_{name}_{k}": v for k, v in point.items() if k.endswith("asr") and v is not None},
                               step=step)


def log_datasets(ws: Workspace, request_id: str) -> None:
    """The forget / retain / eval (and kept) manifests as MLflow datasets (digest: the file's sha256)."""
    folder = ws.stage_dir(request_id, "curate")
    for name in ("forget", "retain", "eval", "kept"):
        path = folder / f"{name}.parquet"
        if not path.is_file():  # kept: only on a model that already forgot concepts
            continue
        frame = pq.read_table(path).drop_columns(["image"]).to_pandas()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        ds = mlflow.data.from_pandas(pd.DataFrame(frame), source=_local_source(path), name=f"{request_id}-{name}",
                                     digest=digest[:16])
        mlflow.log_input(ds, context=name, tags={"sha256": digest})


def _local_source(path: Path):
    """A file-system dataset source (MLflow registers the local-artifact class twice; take the first)."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    cls = next(c for c in get_registered_sources() if c.__name__ == "LocalArtifactDatasetSource")
    return cls(path.resolve().as_uri())
