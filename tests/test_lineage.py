"""The lineage an MLflow run records, without the stack."""

import subprocess

from flows.lineage import git_commit
from stages.workspace import Workspace
from tests.workspace import dvc_env


def test_the_recorded_commit_is_dirty_only_when_code_changed_not_what_the_pipeline_writes(tmp_path):
    """dvc.lock and params.yaml (stage records, the request list) are written by every run; a changed code file is not."""
    for name in ("dvc.lock", "params.yaml", "stage.py"):
        (tmp_path / name).write_text("v1\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@razor.test"], ["git", "config", "user.name", "t"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "v1"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, env=dvc_env())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    ws = Workspace(tmp_path)
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "params.yaml").write_text("v2\n")
    (tmp_path / "new-request.yaml").write_text("untracked\n")
    assert git_commit(ws) == head
    (tmp_path / "stage.py").write_text("v2\n")
    assert git_commit(ws) == f"{head}-dirty"
