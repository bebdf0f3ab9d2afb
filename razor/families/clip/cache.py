"""The frozen-model cache: what one pass of θ0 gives every later phase.

Label-prompt text embeddings (per axis), the frozen image–text similarity matrix of each
retain batch (the drift term's S_θ0), and, for the validation images the step search probes,
the hidden states entering every vision block plus the final image embeddings. Stored as
safetensors; the probes then re-run only the part of the model an edit changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from razor.errors import RazorError
from razor.families.clip.zeroshot import label_embeddings
from razor.io import atomic_path

PROBE_BATCH = 256


@dataclass
class FrozenCache:
    labels: dict[str, torch.Tensor]  # axis → L×D label-prompt embeddings
    frozen: list[torch.Tensor]  # S_θ0 of each retain batch
    hidden: list[torch.Tensor]  # per vision block: its input for every probe image
    images: torch.Tensor  # probe image embeddings
    batch_size: int  # the retain batching `frozen` follows

    @classmethod
    @torch.no_grad()
    def build(cls, task) -> "FrozenCache":
        a = task.adapter
        pixels = probe_pixels(task)
        hidden = [torch.cat(h) for h in zip(*(a.vision_inputs(b) for b in pixels.split(PROBE_BATCH)))]
        images = torch.cat([a.encode_images_from(0, h) for h in hidden[0].split(PROBE_BATCH)])
        return cls(label_embeddings(a, task.labels, task.prompts), task.frozen_outputs(), hidden, images,
                   task.batch_size)

    def summary(self) -> dict:
        """What the cache stage records of it."""
        return dict(retain_batches=len(self.frozen), blocks=len(self.hidden), probe_images=len(self.images))

    def save(self, path: Path, meta: dict) -> None:
        tensors = {f"labels/{k}": v for k, v in self.labels.items()}
        tensors |= {f"frozen/{i}": v for i, v in enumerate(self.frozen)}
        tensors |= {f"hidden/{i}": v for i, v in enumerate(self.hidden)}
        tensors["images"] = self.images
        header = {"razor.cache": json.dumps(dict(meta, batch_size=self.batch_size))}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=header)

    @classmethod
    def load(cls, path: Path, task) -> "FrozenCache":
        """Load a cache and check that it was built for this task's data and batching."""
        try:
            with safe_open(path, "pt") as f:
                meta = json.loads(f.metadata()["razor.cache"])
                t = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 — truncated, corrupt or foreign: the same fix
            raise RazorError(f"the cache {path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             "re-run the cache stage") from e

        if meta.get("family", "clip") != "clip":
            raise RazorError(f"the cache {path} was built for a {meta['family']} model; re-run the cache stage")

        def series(prefix):
            return [t[f"{prefix}/{i}"] for i in range(sum(k.startswith(prefix + "/") for k in t))]

        cache = cls({k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("labels/")},
                    series("frozen"), series("hidden"), t["images"], meta["batch_size"])
        n = len(probe_pixels(task))
        if cache.batch_size != task.batch_size or len(cache.images) != n or set(cache.labels) != set(task.labels):
            raise RazorError(f"the cache {path} was built for other data or batching; re-run the cache stage")
        return cache


def probe_pixels(task) -> torch.Tensor:
    """The validation images the step search measures: forget-val, retain-val, then the val items
    of concepts the model already forgot (if any)."""
    kept = [task.kept_val.pixels] if task.kept_val is not None else []
    return torch.cat([task.forget_val.pixels, task.retain_val.pixels, *kept])
