"""Real benchmark layouts (CelebA, ImageNet class folders, WebDataset shards), each imported from a
tiny fixture folder laid out the same way."""

import io
import tarfile

import pytest
from click.testing import CliRunner

from razor.cli import main
from razor.data import load_images, read_manifest
from razor.demo import world
from razor.errors import DataError
from razor.loaders import import_celeba, import_imagenet, import_webdataset


def face(i: int):
    return world.sample(0, i, "face", (sorted(world.IDENTITIES)[i % 3],)).image


def test_a_celeba_folder_imports_identities_named_from_a_file(tmp_path):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    (root / "Anno").mkdir()
    lines, parts = [], []
    for n in range(1, 15):
        file = f"{n:06d}.jpg"
        face(n).save(root / "img_align_celeba" / file)
        lines.append(f"{file} {2880 if n <= 8 else 17 if n <= 12 else 5}")
        parts.append(f"{file} {0 if n % 4 else 2}")
    (root / "Anno" / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    (root / "names.txt").write_text("2880 Ada Lovelace\n17 Alan Turing\n")
    res = CliRunner().invoke(main, ["data", "import", str(root), "--layout", "celeba", "--names", str(root / "names.txt"),
                                    "--top", "2", "--out", str(tmp_path / "celeba.parquet")])
    assert res.exit_code == 0 and "12 images, 2 identities" in res.output, res.output
    m = read_manifest(tmp_path / "celeba.parquet")
    assert m.labels() == {"identities": ["Ada Lovelace", "Alan Turing"]}  # id 5 (2 images) is not in the top 2
    row = next(r for r in m.rows if r["item_id"] == "000003.jpg")
    assert row["caption"] == "a photo of Ada Lovelace." and row["identities"] == "Ada Lovelace"
    assert load_images(m, 32, (0, 0, 0), (1, 1, 1)).shape == (12, 3, 32, 32)
    (root / "Eval").mkdir()  # the official partition file fixes the splits
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    m = read_manifest(import_celeba(root, tmp_path / "p.parquet"))
    assert {r["item_id"]: r["split"] for r in m.rows}["000004.jpg"] == "test"
    assert m.labels()["identities"] == ["person 17", "person 2880", "person 5"]  # no names file
    (root / "Anno" / "identity_CelebA.txt").write_text("000099.jpg 3\n")
    with pytest.raises(DataError, match="lists 000099.jpg, which is not in"):
        import_celeba(root, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="needs img_align_celeba/ and identity_CelebA.txt"):
        import_celeba(root / "Anno", tmp_path / "bad.parquet")


def test_imagenet_class_folders_import_with_names_from_the_synset_mapping(tmp_path):
    root = tmp_path / "imagenet"
    for part, count in (("train", 6), ("val", 4)):
        for wnid, kind in (("n01440764", ("star", "solid")), ("n02102040", ("circle", "dotted"))):
            (root / part / wnid).mkdir(parents=True)
            for i in range(count):
                world.sample(0, i, "shape", kind).image.save(root / part / wnid / f"{part}_{i}.JPEG", format="JPEG")
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn02102040 English springer, springer\n")
    m = read_manifest(import_imagenet(root, tmp_path / "in.parquet", root / "LOC_synset_mapping.txt"))
    assert m.labels() == {"label": ["English springer", "tench"]} and m.prompts == {"label": "a photo of a {}"}
    splits = {s: len(m.split(s)) for s in ("train", "val", "test")}
    assert splits == {"train": 12, "val": 4, "test": 4}  # train/ is train; val/ halves into val and test
    assert all(r["split"] == "train" for r in m.rows if r["path"].startswith("train/"))
    with pytest.raises(DataError, match="is not '<wnid> <name>'"):
        (tmp_path / "bad.txt").write_text("n01440764\n")
        import_imagenet(root, tmp_path / "x.parquet", tmp_path / "bad.txt")


def shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for key, data in samples:
            info = tarfile.TarInfo(key)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def png(i: int) -> bytes:
    buf = io.BytesIO()
    face(i).save(buf, format="PNG")
    return buf.getvalue()


def test_webdataset_shards_import_with_embedded_images_and_named_identities(tmp_path):
    root = tmp_path / "laion"
    root.mkdir()
    for s in range(2):
        samples = []
        for i in range(5):
            key = f"{s:05d}{i:04d}"
            caption = "Ada Lovelace at a desk" if i % 2 else "a quiet harbour at dusk"
            samples += [(f"{key}.png", png(i)), (f"{key}.txt", caption.encode())]
        samples.append(("orphan.txt", b"a caption without an image"))
        shard(root / f"{s:05d}.tar", samples)
    (root / "names.txt").write_text("1 Ada Lovelace\n2 Alan Turing\n")
    res = CliRunner().invoke(main, ["data", "import", str(root), "--layout", "webdataset", "--names",
                                    str(root / "names.txt"), "--out", str(tmp_path / "laion.parquet")])
    assert res.exit_code == 0 and "10 images" in res.output, res.output
    m = read_manifest(tmp_path / "laion.parquet")  # re-hashes every embedded image
    assert len(m) == 10 and m.labels() == {"identities": ["Ada Lovelace"]}
    row = next(r for r in m.rows if r["item_id"] == "00001/000010001")
    assert row["caption"] == "Ada Lovelace at a desk" and row["identities"] == "Ada Lovelace" and row["image"] == png(1)
    assert sum(r["identities"] is None for r in m.rows) == 6
    assert load_images(m, 16, (0, 0, 0), (1, 1, 1)).shape == (10, 3, 16, 16)
    shard(root / "00002.tar", [("x.png", b"not an image"), ("x.txt", b"broken")])
    with pytest.raises(DataError, match="sample x is not a readable image"):
        import_webdataset(root, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="holds no .tar shards"):
        import_webdataset(tmp_path / "nowhere", tmp_path / "bad.parquet")
