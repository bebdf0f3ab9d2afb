"""The frozen-model cache of a VLM or diffusion task: θ0's output on every retain batch (the drift
term's reference: a VLM's answer-word log-probabilities, a diffusion model's noise predictions),
stored as safetensors with the family it was built for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from razor.errors import RazorError
from razor.io import atomic_path


@dataclass
class OutputCache:
    frozen: list[torch.Tensor]  # θ0's output per retain batch
    family: str
    batch_size: int

    @classmethod
    def build(cls, task) -> "OutputCache":
        return cls(task.frozen_outputs(), task.adapter.family, task.batch_size)

    def summary(self) -> dict:
        """What the cache stage records of it."""
        return dict(retain_batches=len(self.frozen))

    def save(self, path: Path, meta: dict) -> None:
        header = {"razor.cache": json.dumps(dict(meta, batch_size=self.batch_size, family=self.family))}
        with atomic_path(path) as tmp:
            save_file({f"frozen/{i}": v.contiguous() for i, v in enumerate(self.frozen)}, tmp, metadata=header)

    @classmethod
    def load(cls, path: Path, task) -> "OutputCache":
        """Load a cache and check that it was built for this task's retain batches."""
        try:
            with safe_open(path, "pt") as f:
                meta = json.loads(f.metadata()["razor.cache"])
                frozen = [f.get_tensor(f"frozen/{i}") for i in range(len(list(f.keys())))]
        except Exception as e:  # noqa: BLE001 — truncated, corrupt or foreign: the same fix
            raise RazorError(f"the cache {path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             "re-run the cache stage") from e
        batches = list(task.retain.batches(task.batch_size))
        if meta.get("family") != task.adapter.family or meta["batch_size"] != task.batch_size or len(frozen) != len(batches):
            raise RazorError(f"the cache {path} was built for other data or batching; re-run the cache stage")
        return cls(frozen, meta["family"], meta["batch_size"])
