"""Outputs stored by what determines them. A seeded draw is a pure function of the model's weights
and its inputs, so the test protocol's draws of a version (the evaluate stage's, the gate's, the
next request's "before") are made once and read back after: the key hashes the weights and the
exact input tensors, the settings, and the torch build and thread count the numbers came from.

The store is the folder `$RAZOR_OUTPUTS` (default `$RAZOR_HOME/outputs`, `~/.cache/razor/outputs`);
`RAZOR_OUTPUTS=` (empty) turns it off. An entry that cannot be read is made again; a store that cannot be written is skipped
with a warning, never failing the work."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from razor.delta import tensor_sha256, weights_sha256
from razor.io import atomic_path, home

log = logging.getLogger(__name__)


def folder() -> Path | None:
    """Where outputs are stored, or None when the store is off."""
    root = os.environ.get("RAZOR_OUTPUTS", str(home() / "outputs"))
    return Path(root) if root else None


def weights_key(modules: list[torch.nn.Module]) -> str:
    """The hash of the weights an output is made by (taken once per call, shared by its batches)."""
    return hashlib.sha256("".join(weights_sha256(m) for m in modules).encode()).hexdigest()


def key(weights: str, inputs: list[torch.Tensor], settings: dict) -> str:
    """The hash of everything an output depends on: `weights_key`, the input tensors, the settings."""
    h = hashlib.sha256(weights.encode())
    for t in inputs:
        h.update(tensor_sha256(t).encode())
    build = dict(torch=torch.__version__, threads=torch.get_num_threads())
    h.update(json.dumps(dict(settings, **build), sort_keys=True, default=str).encode())
    return h.hexdigest()


def remembered(digest: str, make: Callable[[], torch.Tensor], device: torch.device) -> torch.Tensor:
    """`make()`, or what it gave before under the same key, on `device`."""
    root = folder()
    if root is None:
        return make()
    path = root / digest[:2] / f"{digest}.safetensors"
    if path.is_file():
        try:
            return load_file(path, device=str(device))["output"]
        except (OSError, SafetensorError, KeyError):
            log.warning("stored output %s is unreadable; making it again", path)
    out = make()
    try:
        with atomic_path(path) as tmp:
            save_file({"output": out.detach().cpu().contiguous()}, tmp)
    except OSError as e:
        log.warning("cannot store output in %s (%s); set RAZOR_OUTPUTS to a writable folder, or empty to turn it off",
                    root, e)
    return out
