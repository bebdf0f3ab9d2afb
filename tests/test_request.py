"""Request files: the demo examples validate; malformed, oversized, mistyped or escaping ones are refused."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from razor.cli import main
from razor.request import RequestError, load_request

EXAMPLES = sorted((Path(__file__).parent.parent / "data" / "requests").glob("demo-*.yaml"))


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_demo_requests_cover_each_kind_and_validate():
    kinds = {load_request(p).concept.kind for p in EXAMPLES}
    assert kinds == {"object", "style", "identity"}


@pytest.mark.parametrize("text, message", [
    ("id: x\nconcept: {kind: object, label: star\n", "not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("id: x\nconcept: {kind: object, label: star}\ncolour: red\n", "colour: unknown field"),
    ("id: x\nconcept: {kind: planet, label: mars}\n", "concept.kind"),
    ("id: x\nconcept: {kind: object, label: star}\nseed: many\n", "seed"),
    ("id: Not Valid!\nconcept: {kind: object, label: star}\n", "id: String should match pattern"),
    ("id: x\nconcept: {kind: object, label: star}\nforget_data: ../outside.parquet\n", "relative to the data root"),
    ("id: x\nconcept: {kind: object, label: star}\nforget_data: /etc/passwd\n", "relative to the data root"),
])
def test_bad_requests_are_refused_with_the_field_named(tmp_path, text, message):
    with pytest.raises(RequestError, match=message):
        load_request(write(tmp_path, text))


def test_oversized_request_is_refused(tmp_path):
    with pytest.raises(RequestError, match="at most 65536 bytes"):
        load_request(write(tmp_path, "id: x\n# " + "x" * 70_000 + "\n"))


def test_a_request_that_is_not_utf8_text_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"id: x\nconcept: {kind: object, label: \xff\xfe}\n")
    with pytest.raises(RequestError, match="is not UTF-8 text.*save it as UTF-8"):
        load_request(path)


def test_symlink_out_of_the_data_root_is_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret.parquet").write_bytes(b"x")
    os.symlink(tmp_path / "secret.parquet", root / "link.parquet")
    req = load_request(write(tmp_path, "id: x\nconcept: {kind: object, label: star}\nforget_data: link.parquet\n"))
    with pytest.raises(RequestError, match="outside the data root"):
        req.data_path("forget_data", root)


def test_cli_check_prints_the_normalised_request(tmp_path):
    res = CliRunner().invoke(main, ["request", "check", str(EXAMPLES[0])])
    assert res.exit_code == 0 and '"method": "razor"' in res.stdout
    res = CliRunner().invoke(main, ["request", "check", str(write(tmp_path, "id: x\n"))])
    assert res.exit_code == 2 and "concept: Field required" in res.output


def test_a_kind_whose_axis_the_data_lacks_is_refused_not_guessed():
    from razor.request import Concept

    concept = Concept(kind="identity", label="dotted")
    assert concept.key(["label"]) == "label:dotted"  # a plain folder import has one axis
    assert concept.key(["identities", "objects"]) == "identities:dotted"
    with pytest.raises(RequestError, match="kind identity forgets a label of axis 'identities', but the data is labelled "
                                           "on styles, objects; set the kind .* \\(style, object\\)"):
        concept.key(["styles", "objects"])
