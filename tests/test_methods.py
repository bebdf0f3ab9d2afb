"""Every method runs through the same interface and honours the JSON contract."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from razor import Delta, unlearn
from razor.cli import main
from razor.families import FAMILIES
from razor.methods import family_defaults, method_params

KEYS = {"fa1", "fa5", "forget_cos", "utility", "stability", "leakage", "fa1_q8", "fa1_q4",
        "fa1_paraphrase", "fa5_paraphrase", "utility_paraphrase", "stability_paraphrase"}  # the demo has held-out wordings


@pytest.mark.parametrize("method, params", [
    ("slug", {}),
    ("ga", {"max_steps": 4, "eval_every": 2}),
    ("graddiff", {"max_steps": 4, "eval_every": 2}),
    ("ft", {"max_steps": 2, "eval_every": 2}),
    ("salun", {"max_steps": 4, "eval_every": 2}),
    pytest.param("retrain", {"steps": 15}, marks=pytest.mark.slow),
])
def test_each_baseline_edits_through_the_common_interface(method, params, demo_manifest):
    r = unlearn("moon", data=demo_manifest, method=method, params=params, progress=False)
    assert r["method"] == method and r["forget"] == "objects:moon"
    assert set(r["before"]) == set(r["after"]) == KEYS
    assert all(0.0 <= r["after"][k] <= 1.0 for k in KEYS - {"forget_cos"})
    assert r["delta_bytes"] > 0 and r["components"] and r["seconds"] > 0
    if method == "slug":
        assert len(r["components"]) == 1  # a single layer


def test_cli_json_contract_and_outputs(demo_manifest, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["unlearn", "--forget", "objects:heart", "--method", "graddiff",
                                    "--param", "max_steps=2", "--param", "eval_every=1",
                                    "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert {"method", "forget", "components", "seconds", "peak_mb", "delta_bytes", "before", "after"} <= set(report)
    assert set(report["after"]) == KEYS
    saved = json.loads((out / "report.json").read_text())
    assert saved["after"] == report["after"] and saved["run"]["params"]["max_steps"] == 2
    delta = Delta.load(out / "delta.safetensors")
    assert delta.nbytes == report["delta_bytes"] and delta.meta["forget"] == "objects:heart"
    assert (out / "before_after.png").stat().st_size > 0


def test_demo_info_lists_labels_per_axis():
    res = CliRunner().invoke(main, ["demo", "info", "--json"])
    labels = json.loads(res.stdout)
    assert "star" in labels["objects"] and "dotted" in labels["styles"] and "hana" in labels["identities"]


def test_the_cli_answers_help_and_version_without_loading_torch_and_runs_as_a_module():
    import subprocess
    import sys

    probe = ("import sys; from razor.cli import main; import razor.errors; "
             "heavy = ('torch', 'transformers', 'diffusers', 'sklearn', 'mlflow', 'prefect'); "
             "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr  # heavy libraries load per command
    version = subprocess.run([sys.executable, "-m", "razor.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "version" in version.stdout
    for command in ("intake", "audit", "rollback", "serve", "unlearn", "request"):  # defined after the group, all reachable
        out = subprocess.run([sys.executable, "-m", "razor.cli", command, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "Usage:" in out.stdout, (command, out.stderr)


def test_a_familys_defaults_fill_only_the_params_a_request_leaves_unset():
    fam = dataclasses.replace(FAMILIES["sd3"], defaults={"search": "bisect", "probes": 8, "precondition": "retain"})
    p = family_defaults(method_params("razor", {"probes": 4, "search": "predict"}), fam)
    assert (p.search, p.probes, p.precondition) == ("predict", 4, "retain")  # what the request names wins
    assert family_defaults(p, fam) == p  # applied once or twice alike
    slug = family_defaults(method_params("slug", {}), fam)
    assert (slug.search, slug.probes) == ("bisect", 8) and not hasattr(slug, "precondition")
    assert family_defaults(method_params("ga", {}), fam) == method_params("ga", {})  # no such fields: unchanged
