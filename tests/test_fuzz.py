"""Property-based fuzzing: any request file or manifest is either accepted (and then valid) or refused
with a RazorError that names the problem — never another exception, never a half-accepted input."""

import io
import json
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from razor.curate import curate
from razor.data import read_manifest
from razor.errors import RazorError
from razor.request import Request, load_request

FIELDS = ("id", "model", "concept", "forget_data", "retain_data", "method", "params", "seed")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["demo", "star", "../x.parquet", "/etc/passwd", "a" * 300]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)
concepts = st.one_of(values, st.fixed_dictionaries({"kind": st.sampled_from(["object", "style", "identity", "planet"]),
                                                   "label": st.one_of(st.text(max_size=20), values)}))
request_dicts = st.dictionaries(st.sampled_from(FIELDS + ("colour", "ID", "")), values, max_size=8).flatmap(
    lambda d: st.fixed_dictionaries({"concept": concepts, "id": st.from_regex(r"[a-z0-9][a-z0-9._-]{0,70}", fullmatch=True)})
    .map(lambda extra: {**extra, **d}))
request_texts = st.one_of(
    request_dicts.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.sampled_from([b"a: &x [*x]\n", b"{", b"!!python/object:os.system {}\n", b"x: " + b"[" * 200, b"\xff\xfe\x00"]),
)


@FUZZ
@given(request_texts)
def test_any_request_file_is_valid_or_refused_by_name(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "request.yaml"
        path.write_bytes(text)
        try:
            req = load_request(path)
        except RazorError as e:
            assert str(path) in str(e)
            return
    assert isinstance(req, Request) and re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", req.id)
    for rel in (req.forget_data, req.retain_data):
        assert rel is None or not (Path(rel).is_absolute() or ".." in Path(rel).parts)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 80, 160)).save(buf, "PNG")
    return buf.getvalue()


IMAGES = [png(i) for i in range(4)]


def valid_rows(n: int) -> list[dict]:
    import hashlib

    rows = []
    for i in range(n):
        image = IMAGES[i % 4]
        rows.append(dict(item_id=f"i{i}", path=f"x/{i}.png", label=["star", "ring"][i % 2], caption="a photo",
                         split=["train", "val", "test"][i % 3], sha256=hashlib.sha256(image).hexdigest(), image=image))
    return rows


MUTATIONS = ("drop_column", "duplicate_id", "bad_split", "bad_hash", "null", "retype", "escape_path", "bad_axes",
             "bad_prompts", "empty", "truncate", "garbage", "unknown_axis")


def mutate(rows: list[dict], meta: dict, kind: str, data) -> tuple[list[dict], dict, bool]:
    """Apply one fault; returns (rows, metadata, truncate the written file)."""
    i = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.sampled_from(sorted(rows[0])))  # drop_column, retype: applied last
    if kind == "drop_column":
        rows = [{k: v for k, v in r.items() if k != column} for r in rows]
    elif kind == "duplicate_id":
        rows[i]["item_id"] = rows[(i + 1) % len(rows)]["item_id"]
    elif kind == "bad_split":
        rows[i]["split"] = data.draw(st.text(max_size=8))
    elif kind == "bad_hash":
        rows[i]["sha256"] = data.draw(st.text(max_size=64))
    elif kind == "null":
        for r in rows:
            r[column] = None if r is rows[i] else r[column]
    elif kind == "retype":
        rows = [dict(r, **{column: j}) for j, r in enumerate(rows)]
    elif kind == "escape_path":
        rows[i].pop("image")
        rows[i]["path"] = data.draw(st.sampled_from(["../../etc/passwd", "/etc/passwd", "x/../../y.png"]))
        rows = [dict(r, image=r.get("image")) for r in rows]
    elif kind == "bad_axes":
        meta["razor.axes"] = data.draw(st.sampled_from(["not json", "[1, 2]", "{}", '["label", "label"]', "null"]))
    elif kind == "bad_prompts":
        meta["razor.prompts"] = data.draw(st.sampled_from(["[", '{"label": 3}', '{"label": "no slot"}', "[]"]))
    elif kind == "empty":
        rows = []
    elif kind == "unknown_axis":
        meta["razor.axes"] = '["label", "colour"]'
    return rows, meta, kind == "truncate"


@FUZZ
@given(st.data())
def test_any_manifest_is_valid_or_refused_by_name(data):
    rows = valid_rows(data.draw(st.integers(6, 12)))
    meta = {"razor.axes": '["label"]', "razor.prompts": json.dumps({"label": "a photo of a {}"})}
    kinds = data.draw(st.lists(st.sampled_from(MUTATIONS), min_size=0, max_size=3))
    kinds.sort(key=lambda k: k in ("drop_column", "retype"))
    truncate = False
    for kind in kinds:
        if not rows:
            break
        rows, meta, cut = mutate(rows, meta, kind, data)
        truncate |= cut
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "manifest.parquet"
        if "garbage" in kinds:
            path.write_bytes(data.draw(st.binary(max_size=200)))
        else:
            table = pa.Table.from_pylist(rows) if rows else pa.table({"item_id": pa.array([], pa.string())})
            pq.write_table(table.replace_schema_metadata(meta), path)
            if truncate:
                path.write_bytes(path.read_bytes()[: data.draw(st.integers(0, path.stat().st_size - 1))])
        try:
            manifest = read_manifest(path)
            chosen = curate(manifest, "star", forget_size=2, retain_size=2, eval_size=2)
        except RazorError as e:
            assert str(e)
            return
    assert len(chosen.forget) and len(chosen.retain)
