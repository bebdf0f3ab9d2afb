"""Real benchmark layouts → Parquet manifests (razor.data): UnlearnCanvas (`<style>/<object>/<n>.jpg`),
CelebA identities (`img_align_celeba/` + `identity_CelebA.txt`), ImageNet-style class folders
and LAION-style WebDataset tar shards (image + caption, embedded in the manifest)."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from collections import Counter, defaultdict
from pathlib import Path


from razor.data import IMAGE_SUFFIXES, check_image, decodable, seeded_split, write_manifest
from razor.errors import DataError
from razor.io import sha256_file

UNLEARNCANVAS_PROMPTS = {"styles": "an image in {} style", "objects": "an image of {}"}
CELEBA_PROMPTS = {"identities": "a photo of {}"}
IMAGENET_PROMPTS = {"label": "a photo of a {}"}
CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}  # list_eval_partition.txt
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # one WebDataset sample file


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
                check_image(f, folder)
                rows.append(dict(item_id=f"{style}/{obj}/{f.name}", path=f.relative_to(folder).as_posix(), label=obj,
                                 caption=f"An image of {obj} in {style} style.", split=split, sha256=sha256_file(f),
                                 styles=style, objects=obj))
    if not rows:
        raise DataError(f"{folder} holds no png/jpg images under <style>/<object>/ sub-folders (the UnlearnCanvas layout)")
    rows.sort(key=lambda r: r["item_id"])
    return write_manifest(rows, out, axes=("styles", "objects"), prompts=UNLEARNCANVAS_PROMPTS, root=folder)


def read_pairs(path: Path, what: str) -> list[tuple[str, str]]:
    """The `<key> <value>` lines of a text file (the value may hold spaces), blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it, for example with "
                        f"`iconv -f latin1 -t utf-8`") from e
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DataError(f"{path}:{n}: {line!r} is not '{what}'")
            pairs.append((parts[0], parts[1].strip()))
    return pairs


def read_names(path: str | Path | None, what: str) -> dict[str, str]:
    """A names file: one `<key> <name>` per line (for ImageNet's LOC_synset_mapping.txt the first
    of its comma-separated names is kept)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"names file {path} does not exist; it lists one '<{what}> <name>' per line")
    return {key: name.split(",")[0].strip() for key, name in read_pairs(path, f"<{what}> <name>")}


def _find(folder: Path, name: str) -> Path | None:
    hits = [p for p in (folder / name, folder / "Anno" / name, folder / "Eval" / name) if p.is_file()]
    return hits[0] if hits else None


def import_celeba(folder: str | Path, out: str | Path, names: str | Path | None = None, top: int | None = None,
                  seed: int = 0, val: float = 0.15, test: float = 0.15) -> Path:
    """Manifest of CelebA: FOLDER/img_align_celeba/<n>.jpg and identity_CelebA.txt (`<file> <id>`,
    in FOLDER or FOLDER/Anno), one axis `identities` named from `names` (`<id> <name>` lines; ids
    without a name are kept as "person <id>"). `top` keeps the identities with the most images.
    Splits: list_eval_partition.txt where present, else seeded per identity."""
    folder = Path(folder)
    images, ids_file = folder / "img_align_celeba", _find(folder, "identity_CelebA.txt")
    if not images.is_dir() or ids_file is None:
        raise DataError(f"{folder} is not a CelebA folder; it needs img_align_celeba/ and identity_CelebA.txt "
                        "(in the folder or its Anno/)")
    identity = dict(read_pairs(ids_file, "<image file> <identity id>"))
    keep = {i for i, _ in Counter(identity.values()).most_common(top)}
    named = read_names(names, "identity id")
    partition = _find(folder, "list_eval_partition.txt")
    fixed = {f: CELEBA_SPLITS.get(x, "train") for f, x in read_pairs(partition, "<image file> <0|1|2>")} if partition else {}
    groups = defaultdict(list)
    for file, who in identity.items():
        if who in keep:
            if not (images / file).is_file():
                raise DataError(f"{ids_file} lists {file}, which is not in {images}; restore it or drop its line")
            groups[who].append(images / file)
    rng, rows = random.Random(seed), []
    for who in sorted(groups):
        name = named.get(who, f"person {who}")
        files = sorted(groups[who])
        splits = [(f, fixed[f.name]) for f in files] if fixed else seeded_split(files, rng, val, test)
        for f, split in splits:
            check_image(f, folder)
            rows.append(dict(item_id=f.name, path=f.relative_to(folder).as_posix(), label=name,
                             caption=f"a photo of {name}.", split=split, sha256=sha256_file(f), identities=name))
    if not rows:
        raise DataError(f"{ids_file} lists no image; CelebA's identity file has one '<file> <id>' per line")
    rows.sort(key=lambda r: r["item_id"])
    return write_manifest(rows, out, axes=("identities",), prompts=CELEBA_PROMPTS, root=folder)


def import_imagenet(folder: str | Path, out: str | Path, names: str | Path | None = None, seed: int = 0,
                    val: float = 0.15, test: float = 0.15) -> Path:
    """Manifest of ImageNet-style class folders for zero-shot utility: FOLDER/{train,val}/<wnid>/<image>
    (val is split into val and test, seeded) or FOLDER/<wnid>/<image> (seeded splits); class names
    from `names` (LOC_synset_mapping.txt: `<wnid> <name>, <synonym>…`), else the folder names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; lay ImageNet out as FOLDER/train/<wnid>/ and FOLDER/val/<wnid>/")
    named = read_names(names, "wnid")
    rng, rows = random.Random(seed), []
    if (folder / "train").is_dir():  # train/ is train; val/ is halved into val and test
        parts = [(folder / "train", lambda files: [(f, "train") for f in files]),
                 (folder / "val", lambda files: [(f, "test" if x == "test" else "val")
                                                 for f, x in seeded_split(files, rng, 0.0, 0.5)])]
    else:
        parts = [(folder, lambda files: seeded_split(files, rng, val, test))]
    for part, split_of in parts:
        for class_dir in sorted(p for p in part.iterdir() if p.is_dir()) if part.is_dir() else []:
            splits = split_of(sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            name = named.get(class_dir.name, class_dir.name)
            for f, split in splits:
                check_image(f, folder)
                rows.append(dict(item_id=f.relative_to(folder).as_posix(), path=f.relative_to(folder).as_posix(),
                                 label=name, caption=f"a photo of a {name}.", split=split, sha256=sha256_file(f)))
    if not rows:
        raise DataError(f"{folder} holds no images under <wnid>/ class folders (the ImageNet layout)")
    rows.sort(key=lambda r: r["item_id"])
    return write_manifest(rows, out, prompts=IMAGENET_PROMPTS, root=folder)


def import_webdataset(folder: str | Path, out: str | Path, names: str | Path | None = None, seed: int = 0,
                      val: float = 0.15, test: float = 0.15) -> Path:
    """Manifest of LAION-style WebDataset shards FOLDER/*.tar, each sample `<key>.jpg|png` + `<key>.txt`
    (the caption); the images are embedded in the manifest. Axis `identities`: the first name of
    `names` (`<id> <name>` lines) that the caption mentions, empty where none does."""
    folder = Path(folder)
    shards = sorted(folder.glob("*.tar")) if folder.is_dir() else []
    if not shards:
        raise DataError(f"{folder} holds no .tar shards; WebDataset shards are FOLDER/<n>.tar with <key>.jpg + <key>.txt")
    people = sorted(read_names(names, "id").values(), key=lambda n: (-len(n), n))
    rng, rows = random.Random(seed), []
    for shard in shards:
        samples = defaultdict(dict)
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    key, _, ext = member.name.rpartition(".")
                    if member.isfile() and ext.lower() in ("jpg", "jpeg", "png", "txt"):
                        if member.size > MAX_MEMBER_BYTES:
                            raise DataError(f"{shard}: member {member.name} declares {member.size:,} bytes; samples may "
                                            f"be at most {MAX_MEMBER_BYTES:,} bytes — drop it from the shard")
                        samples[key]["txt" if ext == "txt" else "image"] = tar.extractfile(member).read()
        except tarfile.TarError as e:
            raise DataError(f"{shard} is not a readable tar shard ({e}); re-download or remove it") from e
        keys = sorted(k for k, s in samples.items() if "image" in s and "txt" in s)
        for key, split in seeded_split(keys, rng, val, test):
            data, caption = samples[key]["image"], samples[key]["txt"].decode("utf-8", "replace").strip()
            decodable(io.BytesIO(data), f"{shard.name}: sample {key}")
            who = next((n for n in people if n.lower() in caption.lower()), None)
            rows.append(dict(item_id=f"{shard.stem}/{key}", path=f"{shard.name}#{key}", label=who or "", caption=caption,
                             split=split, sha256=hashlib.sha256(data).hexdigest(), identities=who, image=data))
    if not rows:
        raise DataError(f"the shards in {folder} hold no sample with both an image and a .txt caption")
    return write_manifest(rows, out, axes=("identities",), prompts=CELEBA_PROMPTS, root=folder)
