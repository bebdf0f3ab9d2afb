"""The model registry side of governance: versions as chains of deltas, production, rollback.

Version N of `clip-<model>` is its parent's weights plus its delta (the root's parent is the
base model itself). A version is materialised as a model folder under data/models/<name>/v<N>/
by applying the chain's deltas in order — each delta checks the hashes of the weights it
applies to — and the result must match the version's recorded `razor.weights_sha256`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from razor.delta import Delta, tensor_sha256
from razor.errors import RazorError
from razor.io import atomic_dir
from stages.workspace import ORIGIN, Workspace

ALIAS = "production"


def weights_sha256(model) -> str:
    """One hash over every parameter (name, dtype, shape, bytes), independent of file layout."""
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(f"{name}:{tensor_sha256(t)}\n".encode())
    return h.hexdigest()


def origin(ws: Workspace, spec: str) -> dict:
    """Where a request's model comes from: a materialised version, or a root model (no parent)."""
    from flows.lineage import registered_name

    return ws.origin(spec) or dict(registered_model=registered_name(spec), version="", base_model=spec)


def production(name: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, ALIAS).version)
    except MlflowException:
        return None


def chain(name: str, version: str) -> list:
    """The versions from the root to `version`, each one's parent before it."""
    client, out, v = MlflowClient(), [], str(version)
    while v:
        try:
            mv = client.get_model_version(name, v)
        except MlflowException as e:
            raise RazorError(f"{name} has no version {v}; `razor request list` shows what was registered") from e
        out.append(mv)
        v = mv.tags.get("razor.parent_version", "")
    return out[::-1]


def delta_file(mv) -> Path:
    """The registered delta of a version (a local path: downloaded or in the local artifact store)."""
    return Path(mlflow.artifacts.download_artifacts(f"{mv.source}/delta.safetensors"))


def materialize(ws: Workspace, name: str, version: str) -> Path:
    """data/models/<name>/v<version>/: the version's full weights, built from its chain of deltas."""
    folder = ws.data / "models" / name / f"v{version}"
    versions = chain(name, version)
    expected = versions[-1].tags["razor.weights_sha256"]
    if (folder / ORIGIN).is_file() and weights_sha256(ws.model(folder.relative_to(ws.data).as_posix()).model) == expected:
        return folder  # already built, and its bytes still are that version's
    adapter = ws.model(versions[0].tags["razor.base_model"])
    params = adapter.parameters()
    for mv in versions:
        Delta.load(delta_file(mv)).apply(params)
    actual = weights_sha256(adapter.model)
    if actual != expected:
        raise RazorError(f"{name} v{version} rebuilt from its deltas has weights sha256 {actual[:12]}… but was registered "
                         f"with {expected[:12]}…; run `razor audit {name}@{version}` to find the changed artifact")
    with atomic_dir(folder, ORIGIN) as tmp:
        adapter.model.save_pretrained(tmp, safe_serialization=True)
        adapter.tokenizer.save_pretrained(tmp)
        source = Path(adapter.source)
        if (source / "preprocessor_config.json").is_file():
            shutil.copy2(source / "preprocessor_config.json", tmp)
        (tmp / ORIGIN).write_text(json.dumps(dict(registered_model=name, version=str(version),
                                                  base_model=versions[0].tags["razor.base_model"], weights_sha256=actual,
                                                  forgotten=[mv.tags["razor.concept"] for mv in versions]), indent=2))
    return folder


def promote(name: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, ALIAS, str(version))


def rollback(ws: Workspace, name: str, version: str) -> str:
    """Make `version` production again after checking its rebuilt weights match what was registered."""
    folder = materialize(ws, name, version)
    promote(name, version)
    return json.loads((folder / ORIGIN).read_text())["weights_sha256"]
