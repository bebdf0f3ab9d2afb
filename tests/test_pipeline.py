"""The pipeline end to end with the real stack: Prefect (test harness), DVC (a temp git repo),
MLflow (SQLite in the workspace). One demo request, then re-runs, a param change, a second
request, a stage killed at a random point and a refused request."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import mlflow
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from prefect.artifacts import Artifact

from flows.unlearn import StageRefused, unlearn
from razor.cli import main
from razor.delta import Delta
from stages.workspace import STAGES
from tests.workspace import dvc, dvc_env, make_workspace

pytestmark = pytest.mark.stack

REQUEST = "demo-object-star"
UNLEARN_KEYS = {"method", "forget", "components", "seconds", "peak_mb", "delta_bytes", "before", "after",
                "utility_per_axis", "quantized", "timing", "probes", "forget_target", "ci95", "attacks"}
ATTACKS = {"relearn_retain", "relearn_kshot", "linear_probe", "mia", "quant_lib"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, demo_manifest, prefect_server):
    return make_workspace(tmp_path_factory.mktemp("workspace"))


@pytest.fixture(scope="module")
def first(ws):
    return unlearn(f"data/requests/{REQUEST}.yaml", str(ws))


def client(ws) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    return MlflowClient()


def lock(ws) -> dict:
    return yaml.safe_load((ws / "dvc.lock").read_text())["stages"]


def test_first_run_forgets_and_records_everything(ws, first):
    report = first["report"]
    assert first["stages_run"] == list(STAGES)
    assert set(report) == UNLEARN_KEYS | {"mlflow_run_id", "model_version"}
    before, after = report["before"], report["after"]  # the bar of tests/test_forgetting.py
    assert before["fa1"] >= 0.9 and after["fa1"] <= 0.10 and after["fa1_q4"] <= 0.15
    assert before["utility"] - after["utility"] <= 0.03 and after["stability"] >= 0.9
    assert 1 <= len(report["components"]) <= 12
    shown = Artifact.get(f"razor-{REQUEST}")  # the Prefect UI's result: the before/after table
    table = {row["metric"]: row for row in json.loads(shown.data)}
    assert shown.type == "table" and table["fa1"]["after"] == round(after["fa1"], 4) and report["mlflow_run_id"] in shown.description
    assert {f"{s}@{REQUEST}" for s in STAGES} <= set(lock(ws))

    c = client(ws)
    parent = c.get_run(report["mlflow_run_id"])
    assert parent.data.tags["razor.request"] == REQUEST and parent.data.tags["git.commit"] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout.strip()  # the commit (-dirty rules: tests/test_lineage.py)
    assert any(k.startswith("dvc.curate.") for k in parent.data.tags)
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(STAGES)
    edit = next(r for r in children if r.info.run_name == "edit")
    rounds = json.loads((ws / "results" / REQUEST / "rounds.json").read_text())
    assert len(c.get_metric_history(edit.info.run_id, "fa_val")) == len(rounds) >= 1
    logged = pq.read_table(ws / "data/runs" / REQUEST / "edit" / "rounds.parquet").to_pylist()
    assert {k: sum(r[f"{k}_probes"] for r in logged) for k in ("partial", "full")} == report["probes"]
    assert report["probes"]["partial"] > 0 and report["probes"]["full"] > 0  # cached probes; quantised checks
    assert {k: edit.data.metrics[f"probes_{k}"] for k in ("partial", "full")} == report["probes"]
    assert float(edit.data.params["rho"]) == 1.0
    assert report["forget_target"] == {"value": 0.05, "source": "fixed"} and edit.data.metrics["forget_target"] == 0.05
    assert {i.dataset.name for i in parent.inputs.dataset_inputs} == {f"{REQUEST}-{n}" for n in ("forget", "retain", "eval")}
    artifacts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"dvc.lock", "model", "report.html", "request"} <= artifacts

    version = c.get_model_version("clip-demo", report["model_version"])
    assert version.run_id == parent.info.run_id and version.tags["razor.base_model"] == "demo"
    local = c.download_artifacts(parent.info.run_id, "model", str(ws / ".."))
    delta = Delta.load(os.path.join(local, "delta.safetensors"))
    assert sorted(delta.meta["components"]) == sorted(report["components"])
    assert json.load(open(os.path.join(local, "base.json")))["base_sha256"] == delta.base_sha256

    html = (ws / "data/runs" / REQUEST / "evaluate" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "objects:star" in html


def test_the_attack_stage_tries_every_attack_and_records_it(ws, first):
    attacks = first["report"]["attacks"]
    assert set(attacks) == ATTACKS
    for name, a in attacks.items():  # the base (the ceiling) is attacked too; no oracle is cached in this workspace
        assert a["oracle_asr"] is None and a["seconds"] > 0
        assert name == "mia" and a["verdict"] != "measured" or 0 <= a["asr"] <= 1 and 0 <= a["base_asr"] <= 1
    assert attacks["relearn_retain"]["budget"]["steps"] == 50
    assert [p["budget"]["steps"] for p in attacks["relearn_retain"]["curve"]] == [10, 50]
    assert attacks["relearn_kshot"]["asr"] > first["report"]["after"]["fa1"]  # four forget images bring some of it back

    c = client(ws)
    parent = c.get_run(first["report"]["mlflow_run_id"])
    assert parent.data.metrics["attack_linear_probe_asr"] == attacks["linear_probe"]["asr"]
    run = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                        "and tags.`razor.stage` = 'attack'")[0]
    curve = c.get_metric_history(run.info.run_id, "attack_relearn_retain_asr")
    assert [(m.step, m.value) for m in curve] == [(p["budget"]["steps"], p["asr"]) for p in attacks["relearn_retain"]["curve"]]
    assert run.data.params["attacks"] == "all" and float(run.data.params["lr"]) == 2e-4
    assert {"attack", "plots"} <= {a.path for a in c.list_artifacts(run.info.run_id)}

    html = (ws / "data/runs" / REQUEST / "attack" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "relearn_kshot (4 shots, 20 steps)" in html


def test_second_run_skips_every_stage_and_reuses_the_record(ws, first):
    again = unlearn(f"data/requests/{REQUEST}.yaml", str(ws))
    assert again["stages_run"] == []
    assert again["report"]["mlflow_run_id"] == first["report"]["mlflow_run_id"]
    assert again["report"]["model_version"] == first["report"]["model_version"]
    assert "up to date" in dvc(ws, "status").stdout


def test_razor_run_json_is_the_unlearn_object_plus_lineage(ws, first):
    out = CliRunner().invoke(main, ["run", str(ws / "data/requests" / f"{REQUEST}.yaml"), "--workspace", str(ws), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == first["report"]


def test_metrics_and_plots_show(ws, first, tmp_path):
    shown = json.loads(dvc(ws, "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"][f"results/{REQUEST}/metrics.json"]["data"]
    assert metrics["after"]["fa1"] == first["report"]["after"]["fa1"]
    asr = next(iter(shown.values()))["data"][f"results/{REQUEST}/attacks.json"]["data"]
    assert set(asr) <= ATTACKS and asr["relearn_retain"]["asr"] == first["report"]["attacks"]["relearn_retain"]["asr"]
    out = dvc(ws, "plots", "show", "-o", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "plots" / "index.html").is_file()


def test_changing_rho_reruns_only_edit_and_evaluate(ws, first, caplog):
    params = ws / "params.yaml"
    text = params.read_text()
    try:
        params.write_text(text.replace("rho: 1.0", "rho: 0.5"))
        result = unlearn(f"data/requests/{REQUEST}.yaml", str(ws))
        assert result["stages_run"] == ["edit", "evaluate", "attack"]
        assert result["report"]["model_version"] != first["report"]["model_version"]
        c, run_id = client(ws), result["report"]["mlflow_run_id"]
        edit = c.search_runs([c.get_run(run_id).info.experiment_id],
                             f"tags.mlflow.parentRunId = '{run_id}' and tags.`razor.stage` = 'edit'")[0]
        assert float(edit.data.params["rho"]) == 0.5 and edit.data.tags["dvc.skipped"] == "false"
        assert edit.data.tags["dvc.edit.edit.py"] and not [k for k in edit.data.tags if k.startswith("dvc.dvc.")]
        logged = [r.getMessage() for r in caplog.records]
        assert any("Running stage 'edit@" in m for m in logged)
        assert not [m for m in logged if "git add" in m or "dvc push" in m or "autostage" in m]  # DVC's hints: not ours to give
    finally:
        params.write_text(text)
    assert unlearn(f"data/requests/{REQUEST}.yaml", str(ws))["stages_run"] == ["edit", "evaluate", "attack"]


def test_dvc_compares_commits_and_an_experiment_on_a_param(ws, first, tmp_path):
    w = tmp_path / "w"  # a copy: the experiment leaves its params and results in the workspace, as DVC does
    shutil.copytree(ws, w, symlinks=True)
    for cmd in (["git", "add", "-A", "results", "dvc.lock", "params.yaml", "data/requests"], ["git", "commit", "-qm", "baseline"]):
        subprocess.run(cmd, cwd=w, check=True, capture_output=True, env=dvc_env())
    # README: trying a parameter. Run after test_changing_rho…, which ran rho 0.5 in this workspace: DVC restores
    # edit, evaluate and attack from its run cache (copied with .dvc/), as it does for a user who tried the value before
    out = dvc(w, "exp", "run", "-S", "edit.rho=0.5")
    assert out.returncode == 0, out.stderr
    diff = json.loads(dvc(w, "metrics", "diff", "--all", "--json").stdout)[f"results/{REQUEST}/metrics.json"]
    assert diff["after.fa1"]["old"] == first["report"]["after"]["fa1"] and isinstance(diff["seconds"]["new"], float)
    shown = json.loads(dvc(w, "exp", "show", "--json").stdout)
    exps = [e for row in shown for e in [row, *[x for ex in row.get("experiments") or [] for x in ex["revs"]]]]
    tried = [e["data"] for e in exps if e["data"]["params"]["params.yaml"]["data"]["edit"]["rho"] == 0.5
             and e["rev"] != "workspace"]
    assert tried and isinstance(tried[0]["metrics"][f"results/{REQUEST}/metrics.json"]["data"]["after"]["fa1"], float)
    table = dvc(w, "exp", "show", "--no-pager", "--md").stdout
    assert "!" not in table and "0.5" in table


def test_a_second_request_keeps_the_first_intact(ws, first, tmp_path):
    before = (ws / "data/runs" / REQUEST / "edit" / "delta.safetensors").read_bytes()
    other = tmp_path / "slug-hana.yaml"
    other.write_text("id: slug-hana\nmodel: demo\nconcept: {kind: identity, label: hana}\nmethod: slug\n")
    result = unlearn(str(other), str(ws))
    assert result["stages_run"] == list(STAGES) and result["report"]["method"] == "slug"
    assert (ws / "data/requests/slug-hana.yaml").read_text() == other.read_text()
    assert "slug-hana" in yaml.safe_load((ws / "params.yaml").read_text())["requests"]
    assert "# Requests the pipeline knows" in (ws / "params.yaml").read_text()  # comments kept
    assert (ws / "data/runs" / REQUEST / "edit" / "delta.safetensors").read_bytes() == before
    entries = lock(ws)
    assert {f"{s}@slug-hana" for s in STAGES} <= set(entries) and {f"{s}@{REQUEST}" for s in STAGES} <= set(entries)
    assert "up to date" in dvc(ws, "status").stdout


def test_a_stage_killed_at_a_random_point_reruns_to_the_same_result(ws, first):
    seed = int(os.environ.get("RAZOR_FAULT_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    stage, delay = rng.choice(STAGES[1:]), rng.uniform(1.0, 15.0)
    print(f"RAZOR_FAULT_SEED={seed}: SIGKILL {stage}@{REQUEST} after {delay:.1f} s")
    run = ws / "data/runs" / REQUEST
    before = (run / "edit/delta.safetensors").read_bytes(), json.loads((run / "evaluate/report.json").read_text())["after"]
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", f"{stage}@{REQUEST}"],
                            cwd=ws, env=dvc_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = run / stage
    assert not folder.exists() or (folder / "stage.json").is_file()  # gone, or whole
    if not folder.exists():
        assert f"{stage}@{REQUEST}" in dvc(ws, "status").stdout  # DVC does not take it as done
        later = {"cache": "edit", "rank": "edit", "edit": "evaluate"}.get(stage)  # the stage that reads its result
        if later:
            refused = subprocess.run([sys.executable, "-m", f"stages.{later}", REQUEST], cwd=ws, env=dvc_env(),
                                     capture_output=True, text=True)
            assert refused.returncode == 2 and f"stage {stage} has no result" in refused.stderr
    unlearn(f"data/requests/{REQUEST}.yaml", str(ws))
    after = (run / "edit/delta.safetensors").read_bytes(), json.loads((run / "evaluate/report.json").read_text())["after"]
    assert after == before  # identical to the uninterrupted run
    assert not list(run.glob(f".{stage}.*"))
    assert "up to date" in dvc(ws, "status").stdout


def test_a_temp_folder_a_killed_stage_left_is_cleared_even_when_dvc_skips_the_stage(ws, first):
    stale = ws / "data/runs" / REQUEST / ".cache.killed"  # as a SIGKILL mid-write leaves it
    stale.mkdir()
    (stale / "cache.safetensors").write_bytes(b"partial")
    result = unlearn(f"data/requests/{REQUEST}.yaml", str(ws))
    assert result["stages_run"] == [] and not stale.exists()


def test_a_refused_request_is_not_retried_and_writes_nothing(ws, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: demo-object-unicorn\nmodel: demo\nconcept: {kind: object, label: unicorn}\n")
    with pytest.raises(StageRefused, match="unicorn"):
        unlearn(str(bad), str(ws))
    assert not (ws / "data/runs/demo-object-unicorn/curate").exists()
    assert sum("Running stage 'curate@demo-object-unicorn'" in r.getMessage() for r in caplog.records) == 1


def test_admit_refuses_a_different_request_under_a_taken_id(tmp_path):
    from flows.unlearn import admit
    from razor.request import RequestError
    from stages.workspace import Workspace

    w = Workspace(make_workspace(tmp_path / "w"))
    other = tmp_path / "other.yaml"
    other.write_text(f"id: {REQUEST}\nmodel: demo\nconcept: {{kind: object, label: moon}}\n")
    with pytest.raises(RequestError, match="already at"):
        admit(w, other)
    assert admit(w, w.request_file(REQUEST)) == REQUEST
    assert yaml.safe_load((w.root / "params.yaml").read_text())["requests"].count(REQUEST) == 1
