"""The registry of model families (the contract: `razor/family.py`): one folder and one line each.
A model is detected by its config files, loaded by its family, and every shared part asks the
family of an adapter (`of`) for what differs. Importing the registry loads no model library."""

from __future__ import annotations

from pathlib import Path

from razor.errors import ModelError
from razor.families import clip, sd, sd3, sdxl, vlm
from razor.family import Family
from razor.model_config import config_files

FAMILIES: dict[str, Family] = {f.name: f for f in (
    clip.FAMILY,
    sd.FAMILY,
    sdxl.FAMILY,
    sd3.FAMILY,
    vlm.FAMILY,
)}
DEMO_MODELS = {f.demo: f for f in FAMILIES.values() if f.demo}  # `--model demo`, `demo-sd`, `demo-vlm`


def of(adapter) -> Family:
    """The family of a loaded model."""
    return FAMILIES[adapter.family]


def detect(spec: str) -> Family:
    """The family of a model name, folder or (cached) hub id, from its config files alone."""
    if spec in DEMO_MODELS:
        return DEMO_MODELS[spec]
    files = config_files(spec)
    for f in FAMILIES.values():
        if f.detects(files):
            return f
    said = files.get("config.json", {}).get("model_type") or files.get("model_index.json", {}).get("_class_name")
    raise ModelError(f"{spec!r} is a {said!r} model; RAZOR edits {', '.join(f.kind for f in FAMILIES.values())} "
                     "models (a transformers config.json of model_type clip, llava or llava_next, a diffusers model_index.json, or an "
                     "OpenCLIP open_clip_config.json)")


def source(spec: str) -> str:
    """A demo model's folder, else the spec itself (a folder or a hub id)."""
    return str(DEMO_MODELS[spec].demo_folder) if spec in DEMO_MODELS else spec


def load_model(spec: str, dtype: str = "fp32", device: str = "cpu"):
    """A demo model's name, a local folder or a hub id → its family's adapter, the weights in `dtype`
    (fp32 / fp16 / bf16) on `device` (cpu, cuda, cuda:N)."""
    from razor.models import check_device, torch_dtype  # torch, only once a model is loaded

    check_device(device)
    return detect(spec).load(source(spec), torch_dtype(dtype), device)


def save_model(adapter, folder: Path) -> None:
    """A full model folder of the adapter's weights as they are now, in its family's layout."""
    of(adapter).save(adapter, folder)


def load_task(adapter, sets, batch_size: int = 128):
    """The curated sets loaded as the task of `adapter`'s family."""
    return of(adapter).task.load(adapter, sets, batch_size)


def build_task(adapter, manifest, concept: str, **kw):
    """Curate `concept` from a manifest and load it as the task of `adapter`'s family."""
    return of(adapter).task.build(adapter, manifest, concept, **kw)
