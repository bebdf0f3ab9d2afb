"""The workspace every stage runs in: params.yaml, data/requests/<id>.yaml, data/runs/<id>/.

A stage reads its section of params.yaml, the request, and the files dvc.yaml names as its
deps; it writes its folder data/runs/<id>/<stage>/ all at once (a temporary folder renamed
into place, with stage.json last in it), so a killed stage leaves nothing a later stage or
DVC could take for a result.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from razor import yamlfile
from razor.config import FlowParams
from razor.cost import measure
from razor.curate import Curated
from razor.errors import RazorError
from razor.families import DEMO_MODELS, detect, load_model, load_task
from razor.family import Family
from razor.io import atomic_dir, atomic_path
from razor.methods import family_defaults
from razor.request import Request, RequestError, load_request

STAGES = ("curate", "cache", "rank", "edit", "evaluate", "attack")
MARKER = "stage.json"
ORIGIN = "razor.json"  # in a model folder materialised from a registered version


class LockTimeout(RazorError):
    """A workspace lock still held by another process after the wait allowed."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def check_writable(self) -> None:
        """Refuse, before any work, a workspace that cannot be written or has less than
        $RAZOR_MIN_FREE_MB (default 256) MiB free."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".razor-write-check-"):
                pass
        except OSError as e:
            raise RazorError(f"workspace {self.root} cannot be written ({e.strerror}); run from a writable copy of "
                             "it — nothing was run") from e
        need = int(os.environ.get("RAZOR_MIN_FREE_MB", "256"))
        free = shutil.disk_usage(self.root).free // 2**20
        if free < need:
            raise RazorError(f"workspace {self.root} has {free} MiB free, under the {need} MiB a run needs "
                             "($RAZOR_MIN_FREE_MB); free disk space — nothing was run")

    def params_doc(self) -> dict:
        """The whole of params.yaml (strict YAML: duplicate keys and alias bombs refused)."""
        path = self.root / "params.yaml"
        if not path.is_file():
            raise RazorError(f"{path} is missing; run from the project (or workspace) root that holds params.yaml")
        raw = yamlfile.read(path, "params file") or {}
        if not isinstance(raw, dict):
            raise RazorError(f"params file {path} must hold a mapping of sections (curate, rank, …); fix its layout")
        return raw

    def params(self, section: str) -> dict:
        """One section of params.yaml."""
        values = self.params_doc().get(section) or {}
        if not isinstance(values, dict):
            raise RazorError(f"params file {self.root / 'params.yaml'}: section {section} must map names to values; "
                             f"fix its layout")
        return dict(values)

    def settings(self, section: str, req: dict, cls, family, pipeline_only: tuple[str, ...] = ()):
        """Params of type `cls`: params.yaml's `section` (less its `pipeline_only` keys), overridden by
        the request's own params; the model family's defaults for what neither names."""
        values = {k: v for k, v in self.params(section).items() if k not in pipeline_only}
        return family_defaults(cls(**{**values, **{k: v for k, v in req["params"].items() if k in cls.model_fields}}),
                               family)

    def flow_params(self) -> FlowParams:
        """params.yaml's `flow` section (stage and lock timeouts; the defaults without a params.yaml)."""
        return FlowParams(**self.params("flow")) if (self.root / "params.yaml").is_file() else FlowParams()

    def request_file(self, request_id: str) -> Path:
        return self.data / "requests" / f"{request_id}.yaml"

    def request(self, request_id: str) -> Request:
        req = load_request(self.request_file(request_id))
        if req.id != request_id:
            raise RequestError(f"{self.request_file(request_id)} holds request {req.id!r}; name the file {req.id}.yaml")
        return req

    def run_dir(self, request_id: str) -> Path:
        return self.data / "runs" / request_id

    def stage_dir(self, request_id: str, stage: str) -> Path:
        return self.run_dir(request_id) / stage

    def stage_info(self, request_id: str, stage: str) -> dict:
        path = self.stage_dir(request_id, stage) / MARKER
        if not path.is_file():
            raise RazorError(f"stage {stage} has no result for request {request_id}; run `dvc repro {stage}@{request_id}`")
        return json.loads(path.read_text())

    def results_dir(self, request_id: str) -> Path:
        """What DVC compares across commits and experiments (metrics, plots): results/<id>/, kept in git."""
        return self.root / "results" / request_id

    def plot(self, request_id: str, name: str) -> Path:
        return self.results_dir(request_id) / "plots" / name

    def task(self, request_id: str):
        """The curated sets loaded for the request's model: (request.json, Task); torch seeded first."""
        import torch  # loads with the model code anyway; a baseline's skipped stage never gets here

        torch.manual_seed(0)
        info, req, sets = self.curated(request_id)
        task = load_task(self.model(req["model"], req.get("dtype", "fp32"), req.get("device", "cpu")), sets, req["batch_size"])
        task.checkpointing = req.get("gradient_checkpointing", False)
        task.manifest_path = Path(info["source"])  # the full training data (the retrain oracle trains on it)
        return req, task

    def curated(self, request_id: str) -> tuple[dict, dict, Curated]:
        """The curate stage's record, its request.json and the sets it wrote."""
        folder = self.stage_dir(request_id, "curate")
        info, req = self.stage_info(request_id, "curate"), json.loads((folder / "request.json").read_text())
        return info, req, Curated.read(folder, req["concept_key"], tuple(info.get("forgotten", ())))

    def origin(self, spec: str) -> dict | None:
        """For a model folder materialised from a registered version: which one (its razor.json)."""
        marker = self.data / spec / ORIGIN
        return json.loads(marker.read_text()) if spec not in DEMO_MODELS and marker.is_file() else None

    def root_model(self, spec: str) -> str:
        """The model a request's model descends from (itself, unless it is a materialised version)."""
        came_from = self.origin(spec)
        return came_from["base_model"] if came_from else spec

    @contextlib.contextmanager
    def lock(self, what: str = "workspace", timeout: float | None = None):
        """Exclusive use of the workspace's DVC repo and params.yaml (flows running side by side wait);
        `store`: of creating the MLflow store; `queue`: of the request queue. Waits at most `timeout`
        seconds (default $RAZOR_LOCK_TIMEOUT, else params.yaml flow.lock_timeout), then names the holder.
        The lock (an `flock`) goes with the process that holds it, however it ends."""
        path = self.root / ".dvc" / "tmp" / f"razor-{what}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        if timeout is None:
            timeout = float(os.environ.get("RAZOR_LOCK_TIMEOUT") or self.flow_params().lock_timeout)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 500, 0).decode(errors="replace").strip() or "another process"
                        raise LockTimeout(f"the {what} lock ({path}) is still held after {timeout:.0f} s, by {holder}; "
                                          "wait for it to finish, or stop that process if it hung (the lock goes "
                                          "with it) — nothing was changed") from None
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                          f"({' '.join(sys.argv)[:200]})".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def model_source(self, spec: str) -> str:
        """A demo model's name, a model folder under the data root (as a path), or a hub id."""
        local = self.data / spec
        if spec not in DEMO_MODELS and local.exists():
            if not local.resolve().is_relative_to(self.data.resolve()):
                raise RequestError(f"model {spec!r} resolves outside the data root {self.data}; keep models inside it")
            return str(local)
        return spec

    def model(self, spec: str, dtype: str = "fp32", device: str = "cpu"):
        """`demo`, `demo-vlm`, `demo-sd`, a model folder under the data root, or a hub id (in `dtype` on `device`)."""
        return load_model(self.model_source(spec), dtype, device)

    def family(self, spec: str) -> Family:
        """The family of a request's model, from its config files (no weights loaded)."""
        return detect(self.model_source(spec))

    def method(self, request_id: str) -> str:
        """The method the curated request names (a missing or unfinished curate is refused)."""
        self.stage_info(request_id, "curate")
        return json.loads((self.stage_dir(request_id, "curate") / "request.json").read_text())["method"]

    def skip(self, request_id: str, stage: str, method: str) -> None:
        """The stage's result for a method that does not read it: an empty folder saying so."""
        with self.output(request_id, stage, dict(skipped=f"method {method} does not read it")):
            pass

    def clear_stale(self, request_id: str, stage: str) -> None:
        """Remove the temporary folders a killed run of the stage left (DVC may restore the stage's
        result from its run cache without running it, so the flow clears them too)."""
        for stale in self.run_dir(request_id).glob(f".{stage}.*"):
            shutil.rmtree(stale, ignore_errors=True)

    @contextlib.contextmanager
    def output(self, request_id: str, stage: str, info: dict):
        """Yield a temporary folder that becomes the stage's result only if the block succeeds;
        `info` (which the block may add to) and the block's cost go to its stage.json."""
        final = self.stage_dir(request_id, stage)
        self.clear_stale(request_id, stage)
        with atomic_dir(final, MARKER) as tmp:
            with measure() as cost:
                yield tmp
            info.setdefault("seconds", round(cost.seconds, 3))
            info.setdefault("peak_mb", round(cost.peak_mb, 1))
            write_json(tmp / MARKER, dict(stage=stage, request=request_id, **info))


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def main(stage_fn, stage: str) -> None:
    """`python -m stages.<stage> REQUEST_ID [--root DIR]`: run one stage; input errors exit 2."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=stage_fn.__doc__)
    parser.add_argument("request_id")
    parser.add_argument("--root", default=".", type=Path, help="workspace root (holds params.yaml and data/)")
    args = parser.parse_args()
    try:
        stage_fn(Workspace(args.root.resolve()), args.request_id)
    except RazorError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        print(f"error: invalid parameters for stage {stage} ({problems}); fix params.yaml or the request's params",
              file=sys.stderr)
        sys.exit(2)
