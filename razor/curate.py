"""Curation: a concept and its data → the forget, retain and evaluation sets of one request.

forget: training items that carry the concept (a seeded sample of `forget_size`);
retain: training items of the retain data that do not (`retain_size`);
eval: every held-out (val, test) item that carries it, plus `eval_size` per split that do not.
The same selection serves `razor unlearn` (in memory) and the pipeline's curate stage, which
writes the three as Parquet manifests with the image bytes embedded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from razor.data import Manifest, write_manifest
from razor.errors import DataError


@dataclass(frozen=True)
class Curated:
    axis: str
    label: str
    forget: Manifest
    retain: Manifest
    eval: Manifest

    @property
    def concept(self) -> str:
        return f"{self.axis}:{self.label}"

    def write(self, folder: Path) -> dict[str, str]:
        """forget/retain/eval.parquet in `folder`, images embedded; returns each file's sha256."""
        out = {}
        for name in ("forget", "retain", "eval"):
            m = getattr(self, name)
            rows = [dict(r, image=m.image_bytes(r)) for r in m.rows]
            for r in rows:
                if hashlib.sha256(r["image"]).hexdigest() != r["sha256"]:
                    raise DataError(f"item {r['item_id']!r} changed since its manifest was written; re-import the data")
            path = write_manifest(rows, folder / f"{name}.parquet", m.axes, m.prompts, labels=m.labels())
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out


def curate(manifest: Manifest, concept: str, retain_manifest: Manifest | None = None, forget_size: int = 256,
           retain_size: int = 512, eval_size: int = 600, seed: int = 0, forgotten: tuple[str, ...] = ()) -> Curated:
    """Select the request's items (`concept`: a label or axis:label of `manifest`). Items carrying a
    concept the model already forgot (`forgotten`, axis:label) stay out of the retain sets, so that
    this edit neither re-learns it nor counts it as something to keep."""
    axis, label = manifest.resolve_concept(concept)
    carries = manifest.carries(axis, label)
    earlier = [tuple(c.split(":", 1)) for c in forgotten]

    def keep(r) -> bool:
        return not any(r.get(a) == lab for a, lab in earlier)
    source = retain_manifest or manifest
    if retain_manifest is not None and axis not in retain_manifest.axes:
        raise DataError(f"the retain data has no {axis!r} column, so items carrying {axis}:{label} cannot be excluded; "
                        "give it the same label axes as the forget data")

    def part(m: Manifest, split: str, with_concept: bool, limit: int | None) -> Manifest:
        p = m.split(split).filter(lambda r: bool(carries(r)) == with_concept and (with_concept or keep(r)))
        return p if limit is None else p.sample(limit, seed)

    forget = part(manifest, "train", True, forget_size)
    if not len(forget):
        raise DataError(f"the forget set is empty: no train-split item carries {axis}:{label}; "
                        "add training images of the concept to the manifest")
    retain = part(source, "train", False, retain_size)
    held = {f"{s}-{w}": part(manifest, s, w == "forget", None if w == "forget" else eval_size)
            for s in ("val", "test") for w in ("forget", "retain")}
    empty = [k for k, v in dict(retain=retain, **held).items() if not len(v)]
    if empty:
        raise DataError(f"no items for {', '.join(empty)} of {axis}:{label}; the data needs train, val and test "
                        "items with and without the concept")
    tables = [v.table.select(forget.table.column_names) for v in held.values()]
    evaluation = Manifest(pa.concat_tables(tables), manifest.root, manifest.axes, manifest.prompts, manifest.path,
                          manifest.labels())
    vocabulary = manifest.labels()
    return Curated(axis, label, dataclasses.replace(forget, vocabulary=vocabulary),
                   dataclasses.replace(retain, vocabulary=vocabulary), evaluation)
