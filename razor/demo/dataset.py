"""Write the demo world to a folder: PNG files plus a Parquet manifest (razor.data)."""

from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from razor.data import write_manifest
from razor.demo import world
from razor.io import atomic_dir, home

SIZES = {"train": (120, 600), "val": (8, 50), "test": (8, 50)}  # (shapes per object×style, faces per identity)


def build(out: str | Path, seed: int = 0, sizes: dict = SIZES) -> Path:
    """Generate every split into `out` (atomically: the folder appears complete or not at all), the
    images drawn by one process per core (each image depends only on its seed, index and label)."""
    out = Path(out)
    with atomic_dir(out, "manifest.parquet") as tmp:
        for split in sizes:
            (tmp / split).mkdir()
        todo = [(tmp, seed, split, *item) for split, (s, f) in sizes.items() for item in world.plan(split, seed, s, f)]
        workers = os.cpu_count() or 1
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            rows = list(tqdm(pool.map(_draw, todo, chunksize=256), total=len(todo), desc="demo world", unit="img",
                             leave=False))
        write_manifest(rows, tmp / "manifest.parquet", axes=world.AXES, prompts=world.LABEL_PROMPTS,
                       templates=world.TEMPLATES)
    return out / "manifest.parquet"


def _draw(job: tuple) -> dict:
    """One image written under its split; its manifest row."""
    root, seed, split, index, kind, label = job
    smp = world.sample(seed, index, kind, label)
    rel = f"{split}/{index:08d}.png"
    smp.image.save(root / rel)
    return dict(item_id=f"{split}-{index:08d}", path=rel, label=smp.identity or smp.object, caption=smp.caption,
                split=split, sha256=hashlib.sha256((root / rel).read_bytes()).hexdigest(),
                objects=smp.object, styles=smp.style, identities=smp.identity)


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
