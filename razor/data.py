"""Datasets as Parquet manifests: one row per image, with its labels, caption, split and sha256.

Required columns: item_id, path, label, caption, split, sha256. A manifest may carry several
label axes (the demo world has objects, styles, identities): each axis is a column named in
the schema metadata `razor.axes`, with the prompt template of each axis in `razor.prompts` and,
optionally, the wordings F optimises over and held-out wordings in `razor.templates` (razor.templates).
Without them the manifest has one axis, `label`, prompted as "a photo of a {}". Paths are
relative to the data root, `razor.root` (relative to the manifest's folder; default ".").
A curated manifest embeds each image's bytes in an `image` column (the sha256 is theirs) and
keeps the full label vocabulary of its source in `razor.labels`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from razor.errors import DataError, LabelError
from razor.io import atomic_path, sha256_file
from razor.templates import fields, problem, slots

REQUIRED = ("item_id", "path", "label", "caption", "split", "sha256")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MAX_PIXELS = 8192 * 8192  # per image; below PIL's own decompression-bomb warning
IMPORT_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}", "{}")
DEFAULT_PROMPT = "a photo of a {}"


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its rows, the folder its paths are relative to, its axes."""

    table: pa.Table
    root: Path
    axes: tuple[str, ...]
    prompts: dict[str, str]
    path: Path | None = None  # the Parquet file it was read from
    vocabulary: dict[str, list[str]] | None = None  # razor.labels: the labels of the source dataset
    templates: dict = dataclasses.field(default_factory=dict)  # razor.templates: axis → forget / heldout wordings

    def __len__(self) -> int:
        return self.table.num_rows

    @cached_property
    def rows(self) -> list[dict]:
        return self.table.to_pylist()

    def labels(self) -> dict[str, list[str]]:
        """Sorted distinct labels per axis (for a curated manifest: those of its source)."""
        if self.vocabulary is not None:
            return {a: list(self.vocabulary[a]) for a in self.axes}
        return {a: sorted({r[a] for r in self.rows if r[a] is not None}) for a in self.axes}

    def take(self, index) -> Manifest:
        return dataclasses.replace(self, table=self.table.take(pa.array(index, pa.int64())))

    def filter(self, predicate) -> Manifest:
        return self.take([i for i, r in enumerate(self.rows) if predicate(r)])

    def sample(self, k: int, seed: int) -> Manifest:
        """k rows chosen reproducibly, in manifest order (all of them when k ≥ len)."""
        if k >= len(self):
            return self
        return self.take(np.sort(np.random.default_rng(seed).permutation(len(self))[:k]))

    def image_bytes(self, row: dict) -> bytes:
        """The encoded image of a row: embedded, or read from its file."""
        return row["image"] if row.get("image") is not None else self.resolve(row).read_bytes()

    def split(self, name: str) -> Manifest:
        return self.filter(lambda r: r["split"] == name)

    def carries(self, axis: str, label: str):
        """Predicate: the row carries `label` (or one of the labels of a "a+b" concept) on `axis`."""
        wanted = {part for _, part in concept_parts(f"{axis}:{label}", self.labels())}
        return lambda r: r[axis] in wanted

    def resolve(self, row: dict) -> Path:
        """The file of a row, refused if it leaves the manifest's folder."""
        if "\0" in row["path"]:
            raise DataError(f"item {row['item_id']!r}: path {row['path']!r} holds a NUL byte; re-create the manifest "
                            "with `razor data import`")
        path = (self.root / row["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise DataError(
                f"item {row['item_id']!r}: path {row['path']!r} leaves the data root {self.root}; "
                "keep every image inside the manifest's folder"
            )
        return path

    def resolve_concept(self, concept: str) -> tuple[str, str]:
        """`label`, `axis:label` or several labels of one axis joined by "+" → (axis, label);
        unknown or ambiguous labels are refused."""
        known = self.labels()
        if ":" in concept:
            axis, label = concept.split(":", 1)
            if axis not in known:
                raise LabelError(f"unknown axis {axis!r} in {concept!r}; axes are {', '.join(known)}")
            for part in [label] if label in known[axis] else label.split("+"):
                if part not in known[axis]:
                    raise LabelError(f"label {part!r} is not in axis {axis!r}; its labels are {', '.join(known[axis])}")
            return axis, label
        parts = [concept] if any(concept in labs for labs in known.values()) else concept.split("+")
        axes = {self._axis_of(part, known) for part in parts}
        if len(axes) > 1:
            raise LabelError(f"the labels of {concept!r} lie on different axes ({', '.join(sorted(axes))}); "
                             "one request forgets labels of one axis")
        return axes.pop(), concept

    @staticmethod
    def _axis_of(label: str, known: dict[str, list[str]]) -> str:
        hits = [a for a, labs in known.items() if label in labs]
        if not hits:
            every = ", ".join(f"{a}: {' '.join(labs)}" for a, labs in known.items())
            raise LabelError(f"unknown label {label!r}; the model's labels are {every}")
        if len(hits) > 1:
            raise LabelError(f"label {label!r} is ambiguous; write it as one of {', '.join(f'{a}:{label}' for a in hits)}")
        return hits[0]


def _metadata(table: pa.Table, path: Path):
    meta = table.schema.metadata or {}
    fix = "re-create the manifest with `razor data import`"
    try:
        axes = json.loads(meta[b"razor.axes"]) if b"razor.axes" in meta else ["label"]
        prompts = json.loads(meta[b"razor.prompts"]) if b"razor.prompts" in meta else {}
        root = meta.get(b"razor.root", b".").decode()
        vocabulary = json.loads(meta[b"razor.labels"]) if b"razor.labels" in meta else None
        templates = json.loads(meta[b"razor.templates"]) if b"razor.templates" in meta else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"manifest {path} has unreadable razor metadata ({e}); {fix}") from e
    if not (isinstance(axes, list) and axes and all(isinstance(a, str) and a for a in axes) and len(set(axes)) == len(axes)):
        raise DataError(f"manifest {path}: razor.axes must be a list of distinct column names, not {axes!r}; {fix}")
    if not isinstance(prompts, dict) or not all(isinstance(v, str) and slots(v) == 1 and not fields(v)
                                                for v in prompts.values()):
        raise DataError(f"manifest {path}: razor.prompts must map axes to templates holding {{}} once and no other field "
                        f"(e.g. 'a photo of a {{}}'), not {prompts!r}; {fix}")
    if vocabulary is not None and not (isinstance(vocabulary, dict) and all(
            isinstance(vocabulary.get(a), list) and all(isinstance(x, str) for x in vocabulary[a]) for a in axes)):
        raise DataError(f"manifest {path}: razor.labels must list the labels of every axis; {fix}")
    if (wrong := problem(templates, tuple(axes))) is not None:
        raise DataError(f"manifest {path}: {wrong}; {fix}")
    return tuple(axes), {a: prompts.get(a, DEFAULT_PROMPT) for a in axes}, root, vocabulary, templates


def read_manifest(path: str | Path, verify: bool = True, within: Path | None = None) -> Manifest:
    """Read and validate a manifest; with `verify`, re-hash every file against its sha256; with
    `within` (the data root), refuse a manifest whose image root lies outside it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist; create one with `razor data import FOLDER --out {path}`")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"manifest {path} is not a readable Parquet file ({e}); re-create it with `razor data import`") from e
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise DataError(f"manifest {path} lacks columns {', '.join(missing)}; it needs {', '.join(REQUIRED)}")
    axes, prompts, root, vocabulary, templates = _metadata(table, path)
    absent = [a for a in axes if a not in table.column_names]
    if absent:
        raise DataError(f"manifest {path} names axes {', '.join(absent)} in its metadata but has no such columns")
    for column in dict.fromkeys((*REQUIRED, *axes)):
        kind = table.schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind) and column in axes):
            raise DataError(f"manifest {path}: column {column!r} holds {kind}, not text; {column} must be a string column")
        if column in REQUIRED and table.column(column).null_count:
            raise DataError(f"manifest {path}: column {column!r} has {table.column(column).null_count} empty values; "
                            "every row needs item_id, path, label, caption, split and sha256")
    if "image" in table.column_names and not pa.types.is_binary(table.schema.field("image").type) \
            and table.column("image").null_count != table.num_rows:
        raise DataError(f"manifest {path}: column 'image' must hold encoded image bytes (binary)")
    if table.num_rows == 0:
        raise DataError(f"manifest {path} is empty; it needs at least one image per label")
    manifest = Manifest(table, (path.parent / root).resolve(), axes, prompts, path.resolve(), vocabulary, templates)
    if within is not None and not manifest.root.is_relative_to(within.resolve()):
        raise DataError(f"manifest {path} takes its images from {manifest.root}, outside the data root {within.resolve()}; "
                        "import the images under the data root and re-create the manifest there")
    ids = table.column("item_id").to_pylist()
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DataError(f"manifest {path} repeats item ids {dup}; give every row its own item_id")
    bad_split = sorted(set(table.column("split").to_pylist()) - set(SPLITS))
    if bad_split:
        raise DataError(f"manifest {path} has unknown splits {bad_split}; use {', '.join(SPLITS)}")
    if verify:
        for row in manifest.rows:
            if row.get("image") is not None:
                file, digest = "its embedded image", hashlib.sha256(row["image"]).hexdigest()
            else:
                file = manifest.resolve(row)
                if not file.is_file():
                    raise DataError(f"item {row['item_id']!r}: file {file} is missing; restore it or re-import the folder")
                digest = sha256_file(file)
            if digest != row["sha256"]:
                raise DataError(
                    f"item {row['item_id']!r}: {file} has sha256 {digest[:12]}… but the manifest records "
                    f"{row['sha256'][:12]}…; the data changed since import — restore it or re-import the folder"
                )
    return manifest


def write_manifest(rows: list[dict], out: str | Path, axes=("label",), prompts=None, root: Path | None = None,
                   labels: dict[str, list[str]] | None = None, templates: dict | None = None) -> Path:
    """Write rows as a Parquet manifest atomically; `root` is the folder the paths are relative to,
    `labels` the label vocabulary to keep (a curated subset keeps its source's), `templates` the
    axes' forget and held-out wordings."""
    if not rows:
        raise DataError("refusing to write an empty manifest; the folder holds no images")
    out = Path(out).resolve()
    check_target(out)
    table = pa.Table.from_pylist(rows)
    meta = {
        "razor.axes": json.dumps(list(axes)),
        "razor.prompts": json.dumps(prompts or {a: DEFAULT_PROMPT for a in axes}),
        "razor.root": os.path.relpath(Path(root or out.parent).resolve(), out.parent),
    }
    if labels is not None:
        meta["razor.labels"] = json.dumps(labels)
    if templates:
        if (wrong := problem(templates, tuple(axes))) is not None:
            raise DataError(f"refusing to write manifest {out}: {wrong}")
        meta["razor.templates"] = json.dumps(templates)
    table = table.replace_schema_metadata(meta)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return out


def check_target(out: Path) -> None:
    """A manifest is written only to a new .parquet file or over a manifest (never over an image or
    another file)."""
    if out.suffix.lower() != ".parquet":
        raise DataError(f"manifest file {out} must end in .parquet; choose another --out")
    if out.exists():
        try:
            ours = b"razor.axes" in (pq.read_schema(out).metadata or {})
        except (pa.ArrowException, OSError):
            ours = False
        if not ours:
            raise DataError(f"{out} exists and is not a manifest; razor replaces only a manifest — choose another --out")


def import_folder(folder: str | Path, out: str | Path, seed: int = 0, val: float = 0.15, test: float = 0.15) -> Path:
    """Manifest of an image folder laid out FOLDER/<label>/<image>: hashes, seeded splits, captions."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; lay images out as FOLDER/<label>/<image>.png")
    rows = []
    rng = random.Random(seed)
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f, split in seeded_split(files, rng, val, test):
            check_image(f, folder)
            label = label_dir.name
            rows.append(dict(
                item_id=f"{label}/{f.name}",
                path=f.relative_to(folder).as_posix(),
                label=label,
                caption=rng.choice(IMPORT_TEMPLATES).format(label),
                split=split,
                sha256=sha256_file(f),
            ))
    if not rows:
        raise DataError(f"{folder} holds no png/jpg images under <label>/ sub-folders")
    rows.sort(key=lambda r: r["item_id"])
    return write_manifest(rows, out, root=folder)


def seeded_split(files: list[Path], rng: random.Random, val: float, test: float) -> list[tuple[Path, str]]:
    """(file, split) in a seeded shuffled order: the first test share is test, the next val share val."""
    order = list(range(len(files)))
    rng.shuffle(order)
    n_test, n_val = round(len(files) * test), round(len(files) * val)
    return [(files[i], "test" if rank < n_test else "val" if rank < n_test + n_val else "train")
            for rank, i in enumerate(order)]


def check_image(path: Path, root: Path | None = None) -> None:
    """Refuse a file that is not a regular, readable image of at most MAX_PIXELS pixels (or, given
    `root`, that resolves outside it), naming it."""
    if root is not None and not path.resolve().is_relative_to(root.resolve()):
        raise DataError(f"{path} resolves to {path.resolve()}, outside {root}; copy the image into the folder")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a pipe, device or folder); remove it from the image folder")
    decodable(path, str(path))


def decodable(source, name: str) -> None:
    """Refuse an image (a path or a file object) that does not decode or exceeds MAX_PIXELS."""
    try:
        with warnings.catch_warnings(), Image.open(source) as im:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused by size below
            check_pixels(im, name)
            im.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"{name} is not a readable image ({e}); remove or replace it") from e


def check_pixels(im: Image.Image, name: str) -> None:
    """Refuse an image larger than MAX_PIXELS before its pixels are decoded."""
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise DataError(f"{name} is {w}×{h} pixels; images may have at most {MAX_PIXELS:,} pixels — downscale it")


def load_images(manifest: Manifest, size: int, mean, std) -> "np.ndarray":
    """Every image of the manifest, resized (shortest edge), centre-cropped and normalised: N×3×S×S."""
    out = np.empty((len(manifest), 3, size, size), np.float32)
    for i, row in enumerate(manifest.rows):
        file = "embedded image" if row.get("image") is not None else manifest.resolve(row)
        name = f"item {row['item_id']!r}: {file}"
        try:
            data = manifest.image_bytes(row)
        except OSError as e:
            raise DataError(f"{name} is not a readable image ({e}); remove or replace it") from e
        out[i] = pixels(data, size, mean, std, name)
    return out


def pixels(data: bytes, size: int, mean, std, name: str) -> "np.ndarray":
    """One encoded image resized (shortest edge), centre-cropped and normalised: 3×S×S; `name` says
    which image in the error an unreadable one gets."""
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as im:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused by size below
            check_pixels(im, name)
            im = im.convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"{name} is not a readable image ({e}); remove or replace it") from e
    return ((arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)


def decode(images, preprocess: dict) -> "np.ndarray":
    """Encoded images (bytes each) as a model's `preprocess` wants them: N×3×S×S."""
    size, mean, std = preprocess["size"], preprocess["mean"], preprocess["std"]
    return np.stack([pixels(data, size, mean, std, f"image {i}") for i, data in enumerate(images)])


def concept_parts(concept: str, labels: dict[str, list[str]]) -> list[tuple[str, str]]:
    """"axis:a+b" → [(axis, a), (axis, b)]: the single labels a concept key names; a label of `labels`
    that itself holds "+" (c++) is one label, matched by name."""
    axis, label = concept.split(":", 1)
    if label in labels.get(axis, ()):
        return [(axis, label)]
    return [(axis, part) for part in label.split("+")]
