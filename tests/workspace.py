"""A pipeline workspace in a temp folder: a git + DVC repo holding the project's pipeline files.
The repo is built once per test session (per request set) and copied for each workspace."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", "stages", "razor", "data/requests")
_TEMPLATES: dict[bool, Path] = {}
NO_ATTACKS = {"  attacks: all ": "  attacks: none "}
SMALL = {"forget_size: 256": "forget_size: 64", "retain_size: 512": "retain_size: 128",
         "eval_size: 600": "eval_size: 100", "kept_size: 128": "kept_size: 64", **NO_ATTACKS}


def changed_params(changes: dict[str, str], params: str | None = None) -> str:
    """params.yaml (or `params`) with each text of `changes` replaced; a text it lacks is an error."""
    params = (ROOT / "params.yaml").read_text() if params is None else params
    for old, new in changes.items():
        if old not in params:
            raise ValueError(f"params.yaml has no {old!r} to change")
        params = params.replace(old, new)
    return params


def small_params() -> str:
    """params.yaml at small sets (64 forget, 128 retain, 100 held-out retain items per split, 64
    kept) and no attack stage work, for tests of the machinery rather than of the method."""
    return changed_params(SMALL)


def make_workspace(path: Path, params: str | None = None, requests: bool = True) -> Path:
    """The pipeline copied into `path` as a committed git + DVC repo; optionally with another
    params.yaml (committed too); without `requests`, no request files and an empty `requests:` list."""
    shutil.copytree(_template(requests), path, symlinks=True, dirs_exist_ok=True)
    if params is not None and not requests:
        params = _without_requests(params)
    if params is not None and params != (path / "params.yaml").read_text():
        (path / "params.yaml").write_text(params)
        for cmd in (["git", "add", "params.yaml"], ["git", "commit", "-qm", "params"]):
            subprocess.run(cmd, cwd=path, check=True, capture_output=True, env=dvc_env())
    return path


def _template(requests: bool) -> Path:
    if requests not in _TEMPLATES:
        path = Path(tempfile.mkdtemp(prefix="razor-workspace-"))
        for rel in COPIED if requests else [c for c in COPIED if c != "data/requests"]:
            src, dst = ROOT / rel, path / rel
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        if not requests:
            (path / "params.yaml").write_text(_without_requests((path / "params.yaml").read_text()))
        (path / ".gitignore").write_text("data/runs/\nmlflow.db\nmlartifacts/\n")
        for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@razor.test"],
                    ["git", "config", "user.name", "razor tests"], ["dvc", "init", "-q"],
                    ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
            subprocess.run(cmd, cwd=path, check=True, capture_output=True, env=dvc_env())
        _TEMPLATES[requests] = path
    return _TEMPLATES[requests]


def _without_requests(params: str) -> str:
    return params.replace("requests:\n  - demo-object-star\n", "requests: []\n")


def dvc_env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def dvc(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=path, capture_output=True, text=True, env=dvc_env())


@contextlib.contextmanager
def one_byte_changed(path: Path):
    """Within the block, one bit of the file's middle byte is flipped; the file is whole again after."""
    original = path.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 1
    path.write_bytes(bytes(changed))
    try:
        yield path
    finally:
        path.write_bytes(original)
