"""The audit: rebuild a model version's whole chain from MLflow and the workspace, re-hash every
artifact, and name each one whose bytes no longer match what was recorded."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import yaml
from mlflow import MlflowClient

from flows import registry
from razor.errors import RazorError
from stages.workspace import Workspace


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def resolve(name_at_version: str) -> tuple[str, str]:
    """MODEL[@VERSION] → (name, version); without a version, production (else the latest)."""
    name, _, version = name_at_version.partition("@")
    registry.check_name(name, version or None)
    if version:
        return name, version
    version = registry.production(name)
    if version is None:
        versions = MlflowClient().search_model_versions(f"name = '{name}'")
        if not versions:
            raise RazorError(f"no registered model {name!r}; `razor request list` shows what ran")
        version = str(max(int(v.version) for v in versions))
    return name, version


def audit(ws: Workspace, name: str, version: str) -> dict:
    """The chain root → version, each link with its request, manifests, delta, metrics and checks; an
    artifact missing from the store is a finding. What it downloads is removed when it returns."""
    with tempfile.TemporaryDirectory(prefix="razor-audit-") as tmp:
        return _audit(ws, name, version, Path(tmp))


def _audit(ws: Workspace, name: str, version: str, tmp: Path) -> dict:
    client = MlflowClient()
    links, problems = [], []

    def expect(what: str, path: Path | str, recorded: str | None, actual: str | None, error: str = "") -> dict:
        row = dict(what=what, file=str(path), recorded=recorded, actual=actual, ok=recorded == actual and not error)
        if error:  # the artifact could not be fetched
            row.update(error=error, missing=True)
        if not row["ok"]:
            problems.append(row)
        return row

    def fetch(uri: str, what: str) -> Path | None:
        """An artifact, or None (and a finding) if the store lost it."""
        try:
            return registry.fetch(uri, Path(tempfile.mkdtemp(dir=tmp)), what)
        except RazorError as e:
            expect(what, uri, "present", None, str(e))
            return None

    for mv in registry.chain(name, version):
        run = client.get_run(mv.run_id)
        request_id = mv.tags["razor.request"]
        checks = []
        delta_sha = mv.tags["razor.delta_sha256"]
        try:
            registered = registry.delta_file(mv, tmp)
            checks.append(expect("registered delta", registered, delta_sha, sha256(registered)))
        except RazorError as e:
            checks.append(expect("registered delta", f"{mv.source}/delta.safetensors", delta_sha, None, str(e)))
        local = ws.stage_dir(request_id, "edit") / "delta.safetensors"
        checks.append(expect("delta", local, delta_sha, sha256(local)))
        for ds in run.inputs.dataset_inputs:
            tags = {t.key: t.value for t in ds.tags}
            name_ = tags["mlflow.data.context"]
            path = ws.stage_dir(request_id, "curate") / f"{name_}.parquet"
            checks.append(expect(f"{name_} manifest", path, tags.get("sha256"), sha256(path)))
        here = ws.request_file(request_id)
        if (recorded := fetch(f"runs:/{mv.run_id}/request/{request_id}.yaml", f"recorded request of v{mv.version}")) is not None:
            checks.append(expect("request", here, sha256(recorded), sha256(here)))
        lock = fetch(f"runs:/{mv.run_id}/dvc.lock", f"recorded dvc.lock of v{mv.version}")
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock is not None else {}
        entries = {k: v for k, v in stages.items() if k.endswith(f"@{request_id}")}
        base_file = fetch(f"{mv.source}/base.json", f"base record of v{mv.version}")
        base = json.loads(base_file.read_text()) if base_file is not None else dict(components=[], base_sha256={})
        links.append(dict(version=mv.version, request=request_id, concept=mv.tags["razor.concept"],
                          method=mv.tags["razor.method"], parent_version=mv.tags.get("razor.parent_version", ""),
                          base_model=mv.tags["razor.base_model"], components=base["components"],
                          base_tensors=base["base_sha256"], weights_sha256=mv.tags["razor.weights_sha256"],
                          gate=mv.tags.get("razor.gate", ""), mlflow_run_id=mv.run_id,
                          metrics={k: v for k, v in run.data.metrics.items() if k.startswith(("before_", "after_"))},
                          dvc_stages=sorted(entries), checks=checks))
    if not problems:
        try:
            registry.materialize(ws, name, version)  # the chain's deltas rebuild the registered weights
        except RazorError as e:
            problems.append(dict(what="weights", file=str(ws.data / "models" / name / f"v{version}"), recorded=None,
                                 actual=None, ok=False, error=str(e)))
    return dict(model=name, version=version, chain=links, problems=problems, ok=not problems)


def render(result: dict) -> str:
    verdict = "OK" if result["ok"] else f"{len(result['problems'])} problem(s)"
    lines = [f"audit {result['model']}@{result['version']}: {verdict}"]
    for link in result["chain"]:
        parent = f"v{link['parent_version']}" if link["parent_version"] else link["base_model"]
        lines.append(f"  v{link['version']} ← {parent}: {link['request']} forgets {link['concept']} ({link['method']}; "
                     f"edited {', '.join(link['components'])}; gate {link['gate'] or '-'})")
        for c in link["checks"]:
            lines.append(f"    {'ok ' if c['ok'] else 'BAD'} {c['what']}: {c['file']}")
    for p in result["problems"]:
        if p.get("missing"):
            lines.append(f"MISSING {p['what']}: {p['file']} — {p['error']}")
            continue
        lines.append(f"MISMATCH {p['what']}: {p['file']} (recorded {str(p['recorded'])[:12]}…, now {str(p['actual'])[:12]}…)"
                     + (f" — {p['error']}" if p.get("error") else ""))
    return "\n".join(lines)
