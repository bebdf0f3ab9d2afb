"""Manifests: import of an image folder, validation, and refusals that name the fix."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from razor.data import load_images, read_manifest, write_manifest
from razor.demo import world
from razor.errors import DataError, LabelError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for label, kind in (("star", ("star", "solid")), ("circle", ("circle", "solid"))):
        (root / label).mkdir(parents=True)
        for i in range(10):
            img = world.sample(0, i, "shape", kind).image
            img.save(root / label / f"{i}.{'jpg' if i == 0 else 'png'}")
    return root


def import_(folder, out, seed=0):
    from razor.data import import_folder

    return import_folder(folder, out, seed=seed)


def test_import_hashes_every_file_and_assigns_seeded_splits(folder, tmp_path):
    path = import_(folder, tmp_path / "m" / "manifest.parquet")
    m = read_manifest(path)
    assert len(m) == 20 and m.labels() == {"label": ["circle", "star"]}
    assert {r["split"] for r in m.rows} == {"train", "val", "test"}
    assert all(len(r["sha256"]) == 64 and r["label"] in r["caption"] for r in m.rows)
    again = read_manifest(import_(folder, tmp_path / "again.parquet"))
    assert [r["split"] for r in again.rows] == [r["split"] for r in m.rows]
    other = read_manifest(import_(folder, tmp_path / "other.parquet", seed=1))
    assert [r["split"] for r in other.rows] != [r["split"] for r in m.rows]


def test_a_changed_file_is_named_with_the_fix(folder, tmp_path):
    path = import_(folder, tmp_path / "manifest.parquet")
    victim = folder / "star" / "3.png"
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(DataError, match=r"star/3.png.*changed since import"):
        read_manifest(path)


def test_corrupt_image_is_refused_at_import(folder, tmp_path):
    (folder / "star" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        import_(folder, tmp_path / "manifest.parquet")
    assert not (tmp_path / "manifest.parquet").exists()


def test_empty_folder_and_empty_manifest_are_refused(tmp_path):
    (tmp_path / "empty" / "star").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no png/jpg"):
        import_(tmp_path / "empty", tmp_path / "m.parquet")
    with pytest.raises(DataError, match="empty manifest"):
        write_manifest([], tmp_path / "m.parquet")


def test_paths_that_leave_the_data_root_are_refused(folder, tmp_path):
    path = import_(folder, tmp_path / "manifest.parquet")
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["path"] = "../../etc/passwd"
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.from_pylist(rows, schema=table.schema), bad)
    with pytest.raises(DataError, match="leaves the data root"):
        read_manifest(bad)


def test_duplicate_ids_and_missing_columns_are_refused(folder, tmp_path):
    table = pq.read_table(import_(folder, tmp_path / "manifest.parquet"))
    rows = table.to_pylist()
    rows[1]["item_id"] = rows[0]["item_id"]
    pq.write_table(table.from_pylist(rows, schema=table.schema), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="repeats item ids"):
        read_manifest(tmp_path / "dup.parquet")
    pq.write_table(table.drop(["sha256"]), tmp_path / "nohash.parquet")
    with pytest.raises(DataError, match="lacks columns sha256"):
        read_manifest(tmp_path / "nohash.parquet")


def test_wrongly_typed_columns_and_unreadable_metadata_are_refused(folder, tmp_path):
    table = pq.read_table(import_(folder, tmp_path / "manifest.parquet"))
    typed = table.set_column(table.column_names.index("split"), "split", pa.array(range(table.num_rows)))
    pq.write_table(typed, tmp_path / "typed.parquet")
    with pytest.raises(DataError, match="column 'split' holds int64, not text"):
        read_manifest(tmp_path / "typed.parquet")
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"razor.axes": b"not json"}), tmp_path / "m.parquet")
    with pytest.raises(DataError, match="unreadable razor metadata"):
        read_manifest(tmp_path / "m.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "manifest.parquet").read_bytes()[:300])
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_manifest(tmp_path / "cut.parquet")


def test_a_truncated_image_is_named_when_loaded(folder, tmp_path):
    import hashlib

    path = import_(folder, tmp_path / "manifest.parquet")
    victim = folder / "star" / "3.png"
    victim.write_bytes(victim.read_bytes()[:40])
    table = pq.read_table(path)
    rows = [dict(r, sha256=hashlib.sha256(victim.read_bytes()).hexdigest()) if r["path"] == "star/3.png" else r
            for r in table.to_pylist()]
    pq.write_table(table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(DataError, match=r"star/3.png.*not a readable image"):
        load_images(read_manifest(path), 32, (0.5,) * 3, (0.5,) * 3)


def test_concepts_resolve_by_label_or_axis_label(demo_manifest):
    m = read_manifest(demo_manifest, verify=False)
    assert m.resolve_concept("star") == ("objects", "star")
    assert m.resolve_concept("identities:juno") == ("identities", "juno")
    with pytest.raises(LabelError, match="unknown label 'unicorn'.*objects: arrow"):
        m.resolve_concept("unicorn")
    with pytest.raises(LabelError, match="not in axis 'styles'"):
        m.resolve_concept("styles:star")


def test_an_unlearncanvas_folder_imports_with_style_and_object_axes(tmp_path):
    from click.testing import CliRunner

    from razor.cli import main

    root = tmp_path / "UnlearnCanvas"
    for style in ("Van_Gogh", "Crayon"):
        for obj in ("Dogs", "Towers"):
            (root / style / obj).mkdir(parents=True)
            for i in range(1, 8):
                world.sample(0, i, "shape", ("star", "dotted")).image.save(root / style / obj / f"{i}.jpg")
    args = ["data", "import", str(root), "--layout", "unlearncanvas", "--out", str(tmp_path / "uc.parquet")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "28 images, 2 styles, 2 objects" in res.output, res.output
    m = read_manifest(tmp_path / "uc.parquet")
    assert m.labels() == {"styles": ["Crayon", "Van_Gogh"], "objects": ["Dogs", "Towers"]}
    row = next(r for r in m.rows if r["item_id"] == "Van_Gogh/Towers/3.jpg")
    assert row["caption"] == "An image of Towers in Van_Gogh style." and row["styles"] == "Van_Gogh"
    for style in ("Van_Gogh", "Crayon"):  # every style × object group is split on its own
        for obj in ("Dogs", "Towers"):
            splits = [r["split"] for r in m.rows if r["styles"] == style and r["objects"] == obj]
            assert sorted(splits) == ["test", "train", "train", "train", "train", "train", "val"]
    assert len(m.filter(m.carries("styles", "Crayon"))) == 14
    with pytest.raises(DataError, match="the UnlearnCanvas layout"):
        from razor.loaders import import_unlearncanvas

        import_unlearncanvas(root / "Crayon" / "Dogs", tmp_path / "bad.parquet")


def test_the_kept_items_of_a_long_chain_share_one_budget(demo_manifest):
    from razor.curate import KEPT_MIN, curate

    m = read_manifest(demo_manifest)
    short = curate(m, "star", forget_size=8, retain_size=8, eval_size=8, forgotten=("identities:hana", "styles:dotted"),
                   kept_size=128, kept_total=512)
    assert 200 <= len(short.kept) <= 256  # two concepts: kept_size each, as before (an item carrying both counts once)
    many = tuple(f"identities:{x}" for x in ("alice", "bruno", "chen", "dara", "emil", "farah", "gus", "hana")) + tuple(
        f"styles:{x}" for x in ("solid", "outline", "striped", "dotted", "checkered", "gradient"))
    long = curate(m, "star", forget_size=8, retain_size=8, eval_size=8, forgotten=many, kept_size=128, kept_total=512)
    assert len(long.kept) <= 512 and {r["identities"] for r in long.kept.rows} >= set(x.split(":")[1] for x in many[:8])
    assert max(512 // len(many), KEPT_MIN) == 36 and len(long.kept) >= 0.8 * 36 * len(many)  # each concept its share
