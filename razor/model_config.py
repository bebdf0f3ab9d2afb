"""A model's config files, read without loading it: what its family is detected from
(a local folder, or a hub id already in the local cache; nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from razor.errors import ModelError

CONFIG_FILES = ("model_index.json", "config.json", "open_clip_config.json")  # a diffusers pipeline's, a transformers model's, an OpenCLIP checkpoint's


def config_files(spec: str) -> dict[str, dict]:
    """{file name: parsed JSON} of the config files a local folder or a (cached) hub id has —
    what a family is detected from, without loading any weights."""
    found = {}
    for name in CONFIG_FILES:
        path = Path(spec) / name if Path(spec).exists() else _cached(spec, name)
        if path is not None and path.is_file():
            try:
                found[name] = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot read the config of model {spec!r} ({path.name}: {e}); "
                                 "re-export the model folder") from e
        if name == "model_index.json" and found:
            break
    if not found:
        raise ModelError(f"cannot read the config of model {spec!r} (no {' or '.join(CONFIG_FILES)}); pass a local "
                         "folder (config.json, model.safetensors, tokenizer files) or a hub id that is in the local cache")
    return found


def _cached(spec: str, name: str) -> Path | None:
    """A hub id's file in the local cache, if there (never downloaded here)."""
    try:
        found = try_to_load_from_cache(spec, name)
    except ValueError:  # not a valid repo id (a mistyped path)
        return None
    return Path(found) if isinstance(found, str) else None
