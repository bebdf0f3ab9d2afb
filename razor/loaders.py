"""Real benchmark layouts → Parquet manifests (razor.data): UnlearnCanvas (`<style>/<object>/<n>.jpg`)."""

from __future__ import annotations

import random
from pathlib import Path

from razor.data import IMAGE_SUFFIXES, check_image, seeded_split, write_manifest
from razor.errors import DataError
from razor.io import sha256_file

UNLEARNCANVAS_PROMPTS = {"styles": "an image in {} style", "objects": "an image of {}"}


def import_unlearncanvas(folder: str | Path, out: str | Path, seed: int = 0, val: float = 0.15,
                         test: float = 0.15) -> Path:
    """Manifest of an UnlearnCanvas folder: FOLDER/<style>/<object>/<n>.jpg, two axes (styles,
    objects), captions "An image of {object} in {style} style.", seeded splits per style × object."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; UnlearnCanvas is laid out as FOLDER/<style>/<object>/<n>.jpg")
    rng = random.Random(seed)
    rows = []
    for style_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for object_dir in sorted(p for p in style_dir.iterdir() if p.is_dir()):
            style, obj = style_dir.name, object_dir.name
            files = sorted(p for p in object_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for f, split in seeded_split(files, rng, val, test):
                check_image(f)
                rows.append(dict(item_id=f"{style}/{obj}/{f.name}", path=f.relative_to(folder).as_posix(), label=obj,
                                 caption=f"An image of {obj} in {style} style.", split=split, sha256=sha256_file(f),
                                 styles=style, objects=obj))
    if not rows:
        raise DataError(f"{folder} holds no png/jpg images under <style>/<object>/ sub-folders (the UnlearnCanvas layout)")
    rows.sort(key=lambda r: r["item_id"])
    return write_manifest(rows, out, axes=("styles", "objects"), prompts=UNLEARNCANVAS_PROMPTS, root=folder)
