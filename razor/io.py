"""Atomic writes (files and folders): a result appears under its name only once complete."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from razor.errors import RazorError

UMASK = os.umask(0)
os.umask(UMASK)


def home() -> Path:
    """$RAZOR_HOME (default ~/.cache/razor): the demo world, the retrain oracles, the output store."""
    return Path(os.environ.get("RAZOR_HOME", Path.home() / ".cache" / "razor"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_replaceable(path: str | os.PathLike, marker: str) -> Path:
    """Refuse an output folder that exists but was not written by razor (it lacks `marker`)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / marker).exists())):
        raise RazorError(f"{path} exists and was not written by razor (no {marker}); choose a new output folder")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, marker: str):
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds.
    An existing `path` is replaced only if razor wrote it (it holds `marker`)."""
    path = check_replaceable(path, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~UMASK)
    old = path.parent / f".{path.name}.old"
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
