"""The model registry side of governance: versions as chains of deltas, production, rollback.

Version N of `<family>-<model>` (clip-demo, sd-demo-sd, vlm-demo-vlm) is its parent's weights plus
its delta (the root's parent is the base model itself). A version is materialised as a model folder
under data/models/<name>/v<N>/ in its family's layout by applying the chain's deltas in order — each
delta checks the hashes of the weights it applies to — and the result must match the version's
recorded `razor.weights_sha256`. Each version is logged as an MLflow pyfunc model (razor.served)
that rebuilds it the same way, and `export` copies a materialised version to a folder of the user's.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from razor import served
from razor.delta import Delta, weights_sha256
from razor.errors import RazorError
from razor.families import save_model
from razor.io import atomic_dir
from stages.workspace import ORIGIN, Workspace

ALIAS = "production"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,199}")  # what registered_name gives


def check_name(name: str, version: str | None = None) -> None:
    """A registered model name (and version) as razor writes them, before either reaches a registry
    query or a path."""
    if not NAME.fullmatch(name):
        raise RazorError(f"{name!r} is not a registered model name (lowercase letters, digits, '.', '_', '-', such as "
                         "clip-demo); `razor request list` shows the names")
    if version is not None and not re.fullmatch(r"[1-9][0-9]{0,8}", str(version)):
        raise RazorError(f"version {version!r} of {name} is not a version number (1, 2, …)")


def registered_name(ws: Workspace, model: str) -> str:
    """The registered model a request's edits become versions of: the family, then the model's name
    (clip-demo, sd-demo-sd, vlm-demo-vlm, clip-<folder or hub id>)."""
    return f"{ws.family(model).name}-" + re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-").lower()


def origin(ws: Workspace, spec: str) -> dict:
    """Where a request's model comes from: a materialised version, or a root model (no parent)."""
    return ws.origin(spec) or dict(registered_model=registered_name(ws, spec), version="", base_model=spec)


def production(name: str) -> str | None:
    check_name(name)
    try:
        return str(MlflowClient().get_model_version_by_alias(name, ALIAS).version)
    except MlflowException:
        return None


def chain(name: str, version: str) -> list:
    """The versions from the root to `version`, each one's parent before it."""
    check_name(name, version)
    client, out, v = MlflowClient(), [], str(version)
    while v:
        try:
            mv = client.get_model_version(name, v)
        except MlflowException as e:
            raise RazorError(f"{name} has no version {v}; `razor request list` shows what was registered") from e
        out.append(mv)
        v = mv.tags.get("razor.parent_version", "")
    return out[::-1]


def fetch(uri: str, dst: Path, what: str) -> Path:
    """An artifact downloaded into `dst` (a folder the caller removes); a missing one is named."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except (MlflowException, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RazorError(f"the {what} ({uri}) is missing or unreadable ({reason}); restore the artifact store "
                         "(mlartifacts/) from its backup") from e


def delta_file(mv, dst: Path) -> Path:
    """The registered delta of a version, downloaded under `dst`."""
    return fetch(f"{mv.source}/delta.safetensors", dst / f"v{mv.version}", f"registered delta of {mv.name} v{mv.version}")


def built(ws: Workspace, name: str, mv):
    """The adapter of version `mv` from its folder under data/models, if one is there and its bytes still are
    that version's (a snapshot to build later versions from); else None."""
    folder = ws.data / "models" / name / f"v{mv.version}"
    if not (folder / ORIGIN).is_file():
        return None
    adapter = ws.model(folder.relative_to(ws.data).as_posix())
    return adapter if weights_sha256(adapter.model) == mv.tags["razor.weights_sha256"] else None


def materialize(ws: Workspace, name: str, version: str) -> Path:
    """data/models/<name>/v<version>/: the version's full weights, built from the latest earlier version
    already built there (each checked by its registered hash; else the base model) and the deltas after it,
    so a long chain replays only the deltas since its last built version."""
    versions = chain(name, version)
    folder = ws.data / "models" / name / f"v{version}"
    expected = versions[-1].tags["razor.weights_sha256"]
    if built(ws, name, versions[-1]) is not None:
        return folder  # already built, and its bytes still are that version's
    start, adapter = 0, None
    for i in range(len(versions) - 2, -1, -1):
        if (adapter := built(ws, name, versions[i])) is not None:
            start = i + 1
            break
    adapter = adapter or ws.model(versions[0].tags["razor.base_model"])
    with tempfile.TemporaryDirectory(prefix="razor-deltas-") as tmp:
        for mv in versions[start:]:
            Delta.load(delta_file(mv, Path(tmp))).apply_to(adapter)
    actual = weights_sha256(adapter.model)
    if actual != expected:
        raise RazorError(f"{name} v{version} rebuilt from its deltas has weights sha256 {actual[:12]}… but was registered "
                         f"with {expected[:12]}…; run `razor audit {name}@{version}` to find the changed artifact")
    with atomic_dir(folder, ORIGIN) as tmp:
        save_model(adapter, tmp)  # the family's own folder layout (a diffusers folder for SD)
        (tmp / ORIGIN).write_text(json.dumps(dict(registered_model=name, version=str(version),
                                                  base_model=versions[0].tags["razor.base_model"], weights_sha256=actual,
                                                  forgotten=[mv.tags["razor.concept"] for mv in versions]), indent=2))
    return folder


def export(ws: Workspace, name: str, version: str, out: Path) -> Path:
    """The version's full model folder (its family's layout, which `from_pretrained` reads) at `out`;
    an existing `out` is replaced only if razor wrote it."""
    folder = materialize(ws, name, version)
    with atomic_dir(out, ORIGIN) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
    return out


def promote(name: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, ALIAS, str(version))


def rollback(ws: Workspace, name: str, version: str) -> str:
    """Make `version` production again after checking its rebuilt weights match what was registered."""
    folder = materialize(ws, name, version)
    promote(name, version)
    return json.loads((folder / ORIGIN).read_text())["weights_sha256"]


def base_source(ws: Workspace, spec: str) -> str:
    """Where a registered version's pyfunc model loads its base from: a demo model's name, a hub id,
    or the absolute path of a model folder under the data root."""
    source = ws.model_source(spec)
    return str(Path(source).resolve()) if source != spec else source


def register(ws: Workspace, request_id: str, run_id: str, request: dict) -> tuple[str, str]:
    """The edited model as a new version of its registered model: the delta plus a reference to
    its base (the parent version, the root model, the sha256 of every tensor the delta touches)."""
    delta_path = ws.stage_dir(request_id, "edit") / "delta.safetensors"
    delta = Delta.load(delta_path)
    came_from = origin(ws, request["model"])
    name = came_from["registered_model"]
    adapter = ws.model(request["model"])
    delta.apply_to(adapter)
    digest = weights_sha256(adapter.model)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        parents = [delta_file(mv, Path(tmp) / "chain") for mv in (chain(name, came_from["version"]) if came_from["version"] else [])]
        served.save(model, adapter, ws.curated(request_id)[2], base_source(ws, came_from["base_model"]),
                    [*parents, delta_path], dict(name=name, weights_sha256=digest))
        shutil.copy2(delta_path, model / "delta.safetensors")
        (model / "base.json").write_text(json.dumps(dict(
            model=request["model"], **came_from, base_sha256=delta.base_sha256, edited_sha256=delta.edited_sha256,
            components=delta.meta.get("components", []), request=request_id), indent=2))
        mlflow.log_artifacts(str(model), "model")
    client = MlflowClient()
    try:
        client.create_registered_model(name, description=f"RAZOR edits of {came_from['base_model']} (each: parent + delta)")
    except mlflow.exceptions.MlflowException:
        pass  # it exists
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={
        "razor.request": request_id, "razor.base_model": came_from["base_model"],
        "razor.parent_version": came_from["version"], "razor.weights_sha256": digest,
        "razor.delta_sha256": hashlib.sha256(delta_path.read_bytes()).hexdigest(),
        "razor.concept": request["concept_key"], "razor.method": request["method"]})
    return name, str(version.version)
