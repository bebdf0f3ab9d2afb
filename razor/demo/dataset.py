"""Write the demo world to a folder: PNG files plus a Parquet manifest (razor.data)."""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path

from tqdm import tqdm

from razor.data import write_manifest
from razor.demo import world
from razor.io import atomic_dir, home

SIZES = {"train": (120, 600), "val": (8, 50), "test": (8, 50)}  # (shapes per object×style, faces per identity)


def build(out: str | Path, seed: int = 0, sizes: dict = SIZES) -> Path:
    """Generate every split into `out` (atomically: the folder appears complete or not at all)."""
    out = Path(out)
    with atomic_dir(out, "manifest.parquet") as tmp:
        rows = []
        todo = [(split, *item) for split, (s, f) in sizes.items() for item in world.plan(split, seed, s, f)]
        for split, index, kind, label in tqdm(todo, desc="demo world", unit="img", leave=False):
            smp = world.sample(seed, index, kind, label)
            rel = f"{split}/{index:08d}.png"
            (tmp / split).mkdir(exist_ok=True)
            smp.image.save(tmp / rel)
            rows.append(dict(
                item_id=f"{split}-{index:08d}", path=rel, label=smp.identity or smp.object,
                caption=smp.caption, split=split,
                sha256=hashlib.sha256((tmp / rel).read_bytes()).hexdigest(),
                objects=smp.object, styles=smp.style, identities=smp.identity,
            ))
        write_manifest(rows, tmp / "manifest.parquet", axes=world.AXES, prompts=world.LABEL_PROMPTS,
                       templates=world.TEMPLATES)
    return out / "manifest.parquet"


def demo_manifest(seed: int = 0) -> Path:
    """The demo world's manifest in the cache, generated on first use (by one process: others that
    ask meanwhile wait for it rather than generate and replace it under a reader)."""
    out = home() / f"demo-world-v5-seed{seed}"
    manifest = out / "manifest.parquet"
    if manifest.is_file():
        return manifest
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return manifest if manifest.is_file() else build(out, seed)
