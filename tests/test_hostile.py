"""Reliability, round two: hostile and careless inputs are refused with one line naming the problem
and the fix, exit 2, nothing written; concurrent submits lose nothing (docs/RELIABILITY.md)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import save_file

from razor import data as data_module
from razor.cli import main
from razor.data import import_folder, read_manifest, write_manifest
from razor.demo import DEMO_CLIP, DEMO_VLM, world
from razor.errors import DataError, ModelError, RazorError
from razor.families import load_model
from razor.loaders import import_celeba, import_webdataset
from razor.methods import method_params
from razor.request import RequestError, load_request
from tests.workspace import dvc_env, make_workspace

ROOT = Path(__file__).resolve().parent.parent
STAR = "id: x\nconcept: {kind: object, label: star}\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")) + STAR


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def cli(*args):
    """Run a CLI command in-process; a raw exception would surface as exit code 1 with no 'error:' line."""
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, message):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert message in result.output and "Traceback" not in result.output, result.output


# -- request files ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    (BOMB, "expands through YAML anchors/aliases"),
    ("id: x\nconcept: &c {kind: object, label: [*c]}\n", "refers to itself"),
    (STAR + "id: y\n", "found the key 'id' twice"),
    ("id: x\nconcept: {kind: object, label: star, kind: style}\n", "found the key 'kind' twice"),
    (STAR + "seed: 18446744073709551616\n", "seed: Input should be less than or equal to 4294967295"),
    (STAR + "seed: -1\n", "seed: Input should be greater than or equal to 0"),
    (STAR + "model: ../../x\n", "model: Value error, '../../x' must be a demo model"),
    (STAR + "model: /etc\n", "a folder relative to the data root"),
    (STAR + "params: {kappa: .inf}\n", None),
])
def test_hostile_request_files_are_refused_by_name(tmp_path, text, message):
    path = write(tmp_path, text)
    if message is None:  # the request's params are the method's: refused where they are read
        with pytest.raises(ValidationError, match="finite number"):
            method_params("razor", load_request(path).params)
        return
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace("*", r"\*")):
        load_request(path)
    refused(cli("request", "check", path, "--data-root", tmp_path), message)


def test_anchors_within_the_limit_still_load(tmp_path):
    req = load_request(write(tmp_path, "id: x\nconcept: &c {kind: object, label: star}\nparams: {}\n"))
    assert req.concept.label == "star"


def test_a_fifo_among_request_files_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "r.yaml")
    with pytest.raises(RequestError, match="not a regular file"):
        load_request(tmp_path / "r.yaml")


@pytest.mark.parametrize("name", ["kappa", "lambda_f", "lambda_m", "damping", "kept_weight"])
def test_infinite_or_nan_method_params_are_refused(name):
    for value in (float("inf"), float("nan")):
        with pytest.raises(ValidationError, match=f"(?s){name}.*finite number"):
            method_params("razor", {name: value})
    with pytest.raises(ValidationError, match="(?s)lr.*finite number"):
        method_params("graddiff", {"lr": float("inf")})


@pytest.mark.parametrize("args, message", [
    (["unlearn", "--forget", "star", "--seed", "18446744073709551616"], "is not in the range 0<=x<=4294967295"),
    (["unlearn", "--forget", "star", "--seed", "-1"], "is not in the range 0<=x<=4294967295"),
    (["unlearn", "--forget", "star", "--param", "kappa=.inf"], "kappa: Input should be a finite number"),
    (["data", "import", "x", "--out", "y.parquet", "--layout", "celeba", "--top", "0"], "0 is not in the range x>=1"),
])
def test_out_of_range_cli_values_stop_before_any_work(args, message):
    refused(cli(*args), message)


def test_duplicate_keys_or_a_syntax_error_in_params_yaml_are_named(tmp_path):
    from stages.workspace import Workspace

    ws = Workspace(tmp_path)
    (tmp_path / "params.yaml").write_text("curate:\n  forget_size: 64\n  forget_size: 8\n")
    with pytest.raises(RazorError, match="duplicate key: found the key 'forget_size' twice"):
        ws.params("curate")
    (tmp_path / "params.yaml").write_text("curate: {forget_size: 64\n")
    with pytest.raises(RazorError, match="params file .* is not valid YAML"):
        ws.params("curate")


# -- model folders ----------------------------------------------------------------------------

def clip_copy(tmp_path) -> Path:
    return Path(shutil.copytree(DEMO_CLIP, tmp_path / "clip"))


def test_weights_holding_none_of_the_models_tensors_are_refused_not_randomly_initialised(tmp_path):
    folder = clip_copy(tmp_path)
    save_file({"foo": torch.zeros(3)}, folder / "model.safetensors")
    with pytest.raises(ModelError, match=r"lacks tensors logit_scale, .*\(142 in all\); it holds unknown tensors foo"):
        load_model(str(folder))


def test_weights_missing_one_tensor_are_named(tmp_path):
    from safetensors.torch import load_file

    folder = clip_copy(tmp_path)
    weights = load_file(folder / "model.safetensors")
    del weights["visual_projection.weight"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ModelError, match=r"lacks tensors visual_projection.weight;"):
        load_model(str(folder))


@pytest.mark.parametrize("header", [(10**12).to_bytes(8, "little") + b"{}", (5).to_bytes(8, "little") + b"{abcd",
                                    b"garbage"])
def test_a_malformed_or_oversized_safetensors_header_names_the_file(tmp_path, header):
    folder = clip_copy(tmp_path)
    (folder / "model.safetensors").write_bytes(header)
    with pytest.raises(ModelError, match=r"model.safetensors is not a readable safetensors file"):
        load_model(str(folder))


def test_a_config_of_another_family_than_its_weights_is_refused(tmp_path):
    folder = clip_copy(tmp_path)
    shutil.copy(DEMO_VLM / "config.json", folder / "config.json")
    with pytest.raises(ModelError, match=r"do not match its config \(LlavaForConditionalGeneration\)"):
        load_model(str(folder))


@pytest.mark.parametrize("text", ["{bad", "[1, 2]", '{"image_mean": "abc", "image_std": [1, 1, 1]}',
                                  '{"image_mean": [0, 0, 0], "image_std": [0, 1, 1]}'])
def test_a_corrupt_preprocessor_config_is_named(tmp_path, text):
    folder = clip_copy(tmp_path)
    (folder / "preprocessor_config.json").write_text(text)
    with pytest.raises(ModelError, match="preprocessor_config.json"):
        load_model(str(folder))


def test_an_sd_unet_without_its_weights_is_refused(tmp_path):
    from razor.demo import DEMO_SD

    folder = Path(shutil.copytree(DEMO_SD, tmp_path / "sd", ignore=shutil.ignore_patterns("classifier", "judge")))
    save_file({"foo": torch.zeros(3)}, folder / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelError, match=r"weights of .*unet do not match its config \(UNet2DConditionModel\)"):
        load_model(str(folder))


# -- image folders and importers --------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for label in ("star", "circle"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            world.sample(0, i, "shape", (label, "solid")).image.save(root / label / f"{i}.png")
    return root


def test_a_fifo_among_the_images_is_refused_not_read(folder, tmp_path):
    os.mkfifo(folder / "star" / "pipe.png")
    with pytest.raises(DataError, match="pipe.png is not a regular file"):
        import_folder(folder, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_a_symlinked_image_pointing_outside_the_folder_is_refused_at_import(folder, tmp_path):
    shutil.copy(folder / "star" / "0.png", tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", folder / "star" / "link.png")
    with pytest.raises(DataError, match="link.png resolves to .*outside.png, outside"):
        import_folder(folder, tmp_path / "m.parquet")


def test_images_over_the_pixel_limit_or_decompression_bombs_are_refused(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_PIXELS", 100)  # the demo's 32×32 images stand for huge ones
    with pytest.raises(DataError, match="is 32×32 pixels; images may have at most 100 pixels"):
        import_folder(folder, tmp_path / "m.parquet")
    monkeypatch.setattr(data_module, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own bomb check, as for a 200-megapixel file
    with pytest.raises(DataError, match="is not a readable image .*decompression bomb"):
        import_folder(folder, tmp_path / "m.parquet")


def test_import_never_writes_over_an_input_or_another_file(folder, tmp_path):
    image = folder / "star" / "0.png"
    before = image.read_bytes()
    for out in (image, folder / "star" / "notes.parquet"):
        if out.suffix == ".parquet":
            out.write_text("my notes")
        with pytest.raises(DataError, match="choose another --out"):
            import_folder(folder, out)
    assert image.read_bytes() == before and (folder / "star" / "notes.parquet").read_text() == "my notes"
    refused(cli("data", "import", folder, "--out", image), "choose another --out")


def test_labels_holding_plus_are_matched_by_name_not_split(tmp_path):
    from razor.curate import curate

    root = tmp_path / "images"
    for label in ("c", "c++"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            world.sample(0, i, "shape", ("star" if label == "c" else "circle", "solid")).image.save(root / label / f"{i}.png")
    m = read_manifest(import_folder(root, tmp_path / "m.parquet"))
    assert {r["label"] for r in m.rows if m.carries("label", "c++")(r)} == {"c++"}
    chosen = curate(m, "c++", forget_size=64, retain_size=64, eval_size=64)
    assert {r["label"] for r in chosen.forget.rows} == {"c++"} and {r["label"] for r in chosen.retain.rows} == {"c"}


def test_a_prompt_template_with_two_label_slots_is_refused(folder, tmp_path):
    rows = read_manifest(import_folder(folder, tmp_path / "m.parquet")).rows
    write_manifest(rows, tmp_path / "two.parquet", prompts={"label": "a {} and a {}"}, root=folder)
    with pytest.raises(DataError, match="razor.prompts must map axes to templates holding {} once"):
        read_manifest(tmp_path / "two.parquet")
    with pytest.raises(DataError, match="must hold {} \\(the label\\) once"):
        write_manifest(rows, tmp_path / "t.parquet", root=folder, templates={"label": {"heldout": ["{} {}"]}})


def test_a_manifest_whose_root_is_outside_the_data_root_is_refused(folder, tmp_path):
    data_root = tmp_path / "data"
    data_root.mkdir()
    rows = read_manifest(import_folder(folder, tmp_path / "m.parquet")).rows
    write_manifest(rows, data_root / "escape.parquet", root=folder)  # its own root field points out of data/
    with pytest.raises(DataError, match="takes its images from .*images, outside the data root"):
        read_manifest(data_root / "escape.parquet", within=data_root)
    request = write(tmp_path, STAR + "forget_data: escape.parquet\n")
    refused(cli("request", "check", request, "--data-root", data_root), "outside the data root")


def celeba(tmp_path, lines: str) -> Path:
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    for n in range(3):
        world.sample(0, n, "shape", ("star", "solid")).image.save(root / "img_align_celeba" / f"{n:06d}.jpg")
    (root / "identity_CelebA.txt").write_text(lines)
    return root


@pytest.mark.parametrize("line", ["../../secret.jpg 1", "{secret} 1"])
def test_celeba_lines_naming_files_outside_the_folder_are_refused(tmp_path, line):
    secret = tmp_path / "secret.jpg"
    world.sample(0, 9, "shape", ("star", "solid")).image.save(secret)
    root = celeba(tmp_path, f"000000.jpg 1\n{line.format(secret=secret)}\n")
    with pytest.raises(DataError, match="secret.jpg.*outside"):
        import_celeba(root, tmp_path / "c.parquet")


def test_a_names_file_that_is_not_utf8_is_named(tmp_path):
    root = celeba(tmp_path, "000000.jpg 1\n000001.jpg 1\n")
    (tmp_path / "names.txt").write_bytes("1 Jos\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="names.txt is not UTF-8 text.*iconv"):
        import_celeba(root, tmp_path / "c.parquet", names=tmp_path / "names.txt")


def test_a_webdataset_member_declaring_gigabytes_is_refused_without_reading_it(tmp_path):
    (tmp_path / "shards").mkdir()
    info = tarfile.TarInfo("0001.jpg")
    info.size = 8 << 30
    (tmp_path / "shards" / "0.tar").write_bytes(info.tobuf() + b"\0" * 10_000)  # 10 KiB that declare 8 GiB
    with pytest.raises(DataError, match="declares 8,589,934,592 bytes; samples may be at most"):
        import_webdataset(tmp_path / "shards", tmp_path / "w.parquet")


# -- the workspace: queue and registry names ----------------------------------------------------

def test_an_unreadable_queue_entry_is_listed_with_the_fix_and_the_rest_still_read(tmp_path):
    from flows import queue
    from stages.workspace import Workspace

    ws = Workspace(tmp_path)
    queue.folder(ws).mkdir(parents=True)
    (queue.folder(ws) / "good.json").write_text(json.dumps(dict(id="good", seq=1, state="queued", reason="")))
    (queue.folder(ws) / "cut.json").write_text('{"id": "cut", "se')
    rows = queue.entries(ws)
    assert [(r["id"], r["state"]) for r in rows] == [("good", "queued"), ("cut", "unreadable")]
    assert "delete it and submit the request again" in rows[1]["reason"]


@pytest.mark.parametrize("spec", ["clip-demo' OR name LIKE '%", "../../etc", "clip-demo@1; drop", "clip-demo@0"])
def test_registry_names_are_checked_before_any_query_or_path(spec):
    from flows.audit import resolve

    with pytest.raises(RazorError, match="is not a registered model name|is not a version number"):
        resolve(spec)


@pytest.mark.stack
def test_eight_concurrent_submits_on_a_fresh_workspace_are_all_queued_once(tmp_path):
    """Eight distinct requests and two more copies of one id, submitted at the same moment on a workspace
    with no MLflow store yet: eight queued, the copies refused by name, the store whole."""
    ws = make_workspace(tmp_path / "ws", requests=False)
    env = dvc_env() | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    files = []
    for i in range(8):
        files.append(write(tmp_path, f"id: r{i}\nconcept: {{kind: object, label: star}}\nmethod: slug\n", f"r{i}.yaml"))
    files += [write(tmp_path, "id: r0\nconcept: {kind: style, label: dotted}\n", f"again{i}.yaml") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "razor.cli", "request", "submit", str(f), "--workspace", str(ws)],
                              cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    assert all("Traceback" not in err for _, _, err in results), [err for _, _, err in results]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0] * 8 + [2] * 2, results
    assert sum("was already submitted" in err for _, _, err in results) == 2
    listed = subprocess.run([sys.executable, "-m", "razor.cli", "request", "list", "--json", "--workspace", str(ws)],
                            cwd=ws, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout.strip().splitlines()[-1])
    assert sorted(r["id"] for r in rows) == [f"r{i}" for i in range(8)] and {r["state"] for r in rows} == {"queued"}
    assert sorted(r["seq"] for r in rows) == list(range(1, 9))


@pytest.mark.parametrize("command", [["request", "list"], ["request", "submit", "r.yaml"], ["audit", "clip-demo"]])
def test_an_unreachable_tracking_store_is_named_at_once(tmp_path, monkeypatch, command):
    from flows import lineage

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write(tmp_path, STAR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setattr(lineage, "USER_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.chdir(tmp_path)
    result = cli(*command, "--workspace", tmp_path)  # one try, not MLflow's minutes of retries
    refused(result, f"the MLflow tracking store http://127.0.0.1:{port} cannot be reached")
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


def test_an_unreachable_prefect_api_is_named_before_any_work(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    request = write(tmp_path, STAR)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        result = cli("run", request, "--workspace", tmp_path)
    refused(result, f"the Prefect API http://127.0.0.1:{port}/api cannot be reached")
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("code, fix", [(28, "free disk space"), (30, "read-only")])  # ENOSPC, EROFS
def test_a_full_or_read_only_disk_is_named_and_leaves_nothing(folder, tmp_path, monkeypatch, code, fix):
    import errno
    import tempfile

    assert code in (errno.ENOSPC, errno.EROFS)
    out = tmp_path / "m.parquet"

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(out))

    monkeypatch.setattr(tempfile, "mkstemp", failing)  # where every atomic write starts
    refused(cli("data", "import", folder, "--out", out), f"cannot write {out} ({os.strerror(code)}); ")
    assert fix in cli("data", "import", folder, "--out", out).output and not out.exists()


def test_a_workspace_without_room_or_write_access_is_refused_before_any_work(tmp_path, monkeypatch):
    import tempfile
    from collections import namedtuple

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write(tmp_path, STAR)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))  # 1 MiB free
    refused(cli("request", "submit", tmp_path / "r.yaml", "--workspace", tmp_path), "has 1 MiB free, under the 256 MiB")
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    refused(cli("request", "list", "--workspace", tmp_path), "cannot be written (Read-only file system)")
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_request_left_running_by_a_process_that_died_is_marked_failed(tmp_path):
    from flows import queue
    from stages.workspace import Workspace

    ws = Workspace(tmp_path)
    queue.folder(ws).mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for rid, pid in (("killed", dead.pid), ("alive", os.getpid())):
        (queue.folder(ws) / f"{rid}.json").write_text(json.dumps(dict(
            id=rid, seq=1 if rid == "killed" else 2, state="running", reason="", pid=pid, host=socket.gethostname())))
    assert queue.reap(ws) == ["killed"]
    states = {e["id"]: (e["state"], e["reason"]) for e in queue.entries(ws)}
    assert states["alive"] == ("running", "")
    assert states["killed"][0] == "failed" and f"pid {dead.pid}) ended before it finished" in states["killed"][1]


@pytest.mark.stack
def test_ctrl_c_stops_a_run_within_seconds_leaves_nothing_partial_and_the_flow_run_cancelled(tmp_path):
    """What a terminal's Ctrl-C does (SIGINT to the whole foreground process group) while a stage runs."""
    import signal
    import sqlite3
    import time

    from tests.workspace import small_params

    ws = make_workspace(tmp_path / "ws", small_params(), requests=False)
    env = {k: v for k, v in dvc_env().items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    request = ROOT / "data/requests/demo-object-star.yaml"
    # as a terminal's foreground job: SIGINT handled by default (a suite started in the background with `&`
    # hands its children SIGINT ignored, which Python then leaves ignored)
    proc = subprocess.Popen([sys.executable, "-m", "razor.cli", "run", str(request), "--workspace", str(ws)], cwd=ws,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs = ws / "data/runs/demo-object-star"
    while proc.poll() is None and not list(runs.glob(".cache.*")):  # the cache stage is writing its result
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)  # a hang would be Prefect's client retrying a stopped server
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"razor run still running 120 s after Ctrl-C: {proc.communicate()[0][-2000:]}")
    assert proc.returncode == 130 and "interrupted" in out and "Traceback" not in out, out[-3000:]
    assert not [p.name for p in runs.glob(".*") if p.name != ".gitignore"]  # no temporary left
    assert (runs / "curate" / "stage.json").is_file() and not (runs / "cache").exists()
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        states = db.execute("select state_type from flow_run").fetchall()
    assert states == [("CANCELLED",)], states
    with sqlite3.connect(ws / "mlflow.db") as db:  # MLflow: curate finished, cache and the request's run killed
        runs = dict(db.execute("select name, status from runs").fetchall())
    assert runs == {"demo-object-star": "KILLED", "curate": "FINISHED", "cache": "KILLED"}, runs


def test_a_manifest_path_with_a_nul_byte_is_named(folder, tmp_path):
    rows = read_manifest(import_folder(folder, tmp_path / "m.parquet")).rows
    rows[0]["path"] = "star/0\0.png"
    write_manifest(rows, tmp_path / "nul.parquet", root=folder)
    with pytest.raises(DataError, match="holds a NUL byte"):
        read_manifest(tmp_path / "nul.parquet")


@pytest.mark.stack
def test_razor_run_prints_an_input_error_as_one_line_without_a_prefect_traceback(tmp_path):
    """A syntax error in params.yaml (before the store is touched: no mlflow.db) and a label the data lacks
    (refused by the curate stage under DVC): each one `error:` line, exit 2, no traceback in the output."""
    ws = make_workspace(tmp_path / "ws", requests=False)
    env = {k: v for k, v in dvc_env().items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    params = (ws / "params.yaml").read_text()

    def run(request: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "razor.cli", "run", str(request), "--workspace", str(ws)],
                              cwd=ws, env=env, capture_output=True, text=True, timeout=600)

    (ws / "params.yaml").write_text(params + "broken: [unclosed\n")
    out = run(write(tmp_path, STAR))
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    errors = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
    assert errors == [f"error: params file {ws / 'params.yaml'} is not valid YAML (while parsing a flow sequence); "
                      "fix its syntax"], out.stderr[-3000:]
    assert not (ws / "mlflow.db").exists() and not (ws / "data").exists()
    (ws / "params.yaml").write_text(params)
    out = run(write(tmp_path, "id: x\nconcept: {kind: object, label: zeppelin}\n"))
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    assert "error: label 'zeppelin' is not in axis 'objects'" in out.stderr, out.stderr[-3000:]
