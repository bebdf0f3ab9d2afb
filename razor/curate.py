"""Curation: a concept and its data → the forget, retain and evaluation sets of one request.

forget: training items that carry the concept (a seeded sample of `forget_size`);
retain: training items of the retain data that do not (`retain_size`);
eval: every held-out (val, test) item that carries it, plus `eval_size` per split that do not, plus
every held-out item carrying a concept the model already forgot (the kept-forgotten checks);
kept: for each concept the model already forgot, `kept_size` training items carrying it (not this one).
The same selection serves `razor unlearn` (in memory) and the pipeline's curate stage, which
writes the three as Parquet manifests with the image bytes embedded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from razor.data import Manifest, concept_parts, read_manifest, write_manifest
from razor.errors import DataError


@dataclass(frozen=True)
class Curated:
    axis: str
    label: str
    forget: Manifest
    retain: Manifest
    eval: Manifest
    forgotten: tuple[str, ...] = ()  # axis:label of the concepts the model already forgot
    kept: Manifest | None = None

    @property
    def concept(self) -> str:
        return f"{self.axis}:{self.label}"

    @property
    def names(self) -> tuple[str, ...]:
        return ("forget", "retain", "eval") + (("kept",) if self.kept is not None else ())

    @classmethod
    def read(cls, folder: Path, concept: str, forgotten: tuple[str, ...] = ()) -> "Curated":
        """The sets a curate stage wrote to `folder`."""
        axis, label = concept.split(":", 1)
        sets = {n: read_manifest(folder / f"{n}.parquet") for n in ("forget", "retain", "eval", "kept")
                if n != "kept" or forgotten}
        return cls(axis, label, forgotten=tuple(forgotten), **sets)

    def write(self, folder: Path) -> dict[str, str]:
        """forget/retain/eval(/kept).parquet in `folder`, images embedded; returns each file's sha256."""
        out = {}
        for name in self.names:
            m = getattr(self, name)
            rows = [dict(r, image=m.image_bytes(r)) for r in m.rows]
            for r in rows:
                if hashlib.sha256(r["image"]).hexdigest() != r["sha256"]:
                    raise DataError(f"item {r['item_id']!r} changed since its manifest was written; re-import the data")
            path = write_manifest(rows, folder / f"{name}.parquet", m.axes, m.prompts, labels=m.labels(),
                                  templates=m.templates)
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out


def curate(manifest: Manifest, concept: str, retain_manifest: Manifest | None = None, forget_size: int = 256,
           retain_size: int = 512, eval_size: int = 600, seed: int = 0, forgotten: tuple[str, ...] = (),
           kept_size: int = 128, kept_total: int = 512) -> Curated:
    """Select the request's items (`concept`: a label or axis:label of `manifest`). Items carrying a
    concept the model already forgot (`forgotten`, axis:label) stay out of the retain sets, so that
    this edit neither re-learns it nor counts it as something to keep."""
    axis, label = manifest.resolve_concept(concept)
    carries = manifest.carries(axis, label)
    labels = manifest.labels()
    this = set(concept_parts(f"{axis}:{label}", labels))
    forgotten = tuple(c for c in forgotten if not set(concept_parts(c, labels)) <= this)  # this request forgets those itself
    earlier = [part for c in forgotten for part in concept_parts(c, labels)]

    def keep(r) -> bool:
        return not any(r.get(a) == lab for a, lab in earlier)
    source = retain_manifest or manifest
    if retain_manifest is not None and axis not in retain_manifest.axes:
        raise DataError(f"the retain data has no {axis!r} column, so items carrying {axis}:{label} cannot be excluded; "
                        "give it the same label axes as the forget data")

    def part(m: Manifest, split: str, with_concept: bool, limit: int | None) -> Manifest:
        p = m.split(split).filter(lambda r: bool(carries(r)) == with_concept and (with_concept or keep(r)))
        return p if limit is None else p.sample(limit, seed)

    def kept(split: str) -> Manifest:
        return manifest.split(split).filter(lambda r: not carries(r) and not keep(r))

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
    kept_held = [kept(s) for s in ("val", "test")] if earlier else []
    tables = [v.table.select(forget.table.column_names) for v in [*held.values(), *kept_held]]
    evaluation = Manifest(pa.concat_tables(tables), manifest.root, manifest.axes, manifest.prompts, manifest.path,
                          manifest.labels(), manifest.templates)
    vocabulary = manifest.labels()
    return Curated(axis, label, dataclasses.replace(forget, vocabulary=vocabulary),
                   dataclasses.replace(retain, vocabulary=vocabulary), evaluation, tuple(forgotten),
                   kept_train(manifest, carries, earlier, kept_size, seed, kept_total))


KEPT_MIN = 16  # training items of each earlier concept however long the chain


def kept_train(manifest: Manifest, carries, earlier: list[tuple[str, str]], size: int, seed: int,
               total: int = 512) -> Manifest | None:
    """Training items of each earlier forgotten concept that do not carry this one (each item once):
    `size` each, or `total` shared among them when that is fewer (at least KEPT_MIN each)."""
    if not earlier:
        return None
    size = min(size, max(KEPT_MIN, total // len(earlier)))
    train = manifest.split("train")
    chosen: set[str] = set()
    for a, lab in earlier:
        chosen |= {r["item_id"] for r in train.filter(lambda r: r.get(a) == lab and not carries(r)).sample(size, seed).rows}
    if not chosen:
        raise DataError(f"no training items carry the already-forgotten concepts {', '.join(':'.join(c) for c in earlier)}; "
                        "the data must hold the items each earlier request forgot")
    return dataclasses.replace(train.filter(lambda r: r["item_id"] in chosen), vocabulary=manifest.labels())
