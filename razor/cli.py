"""The `razor` command line. Heavy libraries (torch, transformers, diffusers, MLflow, Prefect) load
inside the command that needs them, so `razor --help` answers at once."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import subprocess
import sys

import click
import yaml
from pydantic import ValidationError

from razor.config import DTYPES, MAX_SEED, AttackParams
from razor.errors import RazorError
from razor.methods import METHODS

SEED = click.IntRange(0, MAX_SEED)
DISK_ERRORS = {errno.ENOSPC: "free disk space and run it again", errno.EDQUOT: "free space within your quota",
               errno.EROFS: "the file system is read-only; run from a writable copy",
               errno.EACCES: "you may not write there; fix its permissions or choose another place"}


def friendly(fn):
    """Print input errors as one line naming the problem and the fix; exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RazorError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            click.echo(f"error: invalid parameters: {problems}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted (Ctrl-C); what finished is kept and nothing partial was left — run it "
                       "again to resume", err=True)
            sys.exit(130)
        except OSError as e:  # the disk, not the code: writes are atomic, so nothing partial is left
            if e.errno not in DISK_ERRORS:
                raise
            where = f" {e.filename}" if e.filename else ""
            click.echo(f"error: cannot write{where} ({e.strerror}); {DISK_ERRORS[e.errno]} — nothing was changed", err=True)
            sys.exit(2)

    return wrapper


def parse_params(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs; values are read as YAML scalars (numbers, booleans, lists)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise RazorError(f"--param {item!r} is not KEY=VALUE; write for example --param rho=0.5")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


@click.group()
@click.version_option(package_name="razor")
def main():
    """RAZOR: targeted unlearning for transformer vision models."""
    service_timeouts()


def service_timeouts() -> None:
    """MLflow and Prefect calls give up sooner than their libraries' defaults (MLflow: 120 s × 7 retries):
    60 s a call, 2 retries; their own variables win where set. Reachability is checked first, within
    $RAZOR_SERVICE_TIMEOUT seconds (default 10)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", "60")


@main.command()
@click.option("--model", default="demo", show_default=True,
              help="demo (CLIP), demo-vlm (LLaVA-style), demo-sd (Stable Diffusion), demo-sd3 (SD3-style), a local folder, or a hub id")
@click.option("--data", type=click.Path(dir_okay=False), help="Parquet manifest (default: the demo world)")
@click.option("--forget", required=True, help="the concept: a label, or axis:label (a VLM: labels of one axis joined by +)")
@click.option("--method", default="razor", show_default=True,
              type=click.Choice(list(METHODS)))
@click.option("--param", "params", multiple=True, help="method parameter KEY=VALUE (repeatable)")
@click.option("--out", type=click.Path(file_okay=False), help="folder for the delta, logs, report and plots")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(DTYPES),
              help="the weights' precision")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1),
              help="items per forward pass (gradients accumulate over batches)")
@click.option("--gradient-checkpointing", is_flag=True, help="recompute activations in the backward pass (less memory)")
@click.option("--attacks", help="then try to bring the concept back: all, or attack names joined by commas "
              "(every family: relearn_retain, relearn_kshot, quant_lib; CLIP, VLM: linear_probe; CLIP: mia; "
              "VLM: text_question; Stable Diffusion: adversarial_prompt, concept_inversion), on the edited, base "
              "and cached oracle models")
@click.option("--attack-param", "attack_params", multiple=True, help="an attack budget KEY=VALUE (repeatable): "
              + ", ".join(AttackParams.model_fields))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the table")
@friendly
def unlearn(model, data, forget, method, params, out, seed, dtype, device, batch_size, gradient_checkpointing, attacks,
            attack_params, as_json):
    """Forget one concept and print the before/after table."""
    from razor.api import unlearn as run
    from razor.report import table

    report = run(forget, model=model, data=data, method=method, params=parse_params(params), out=out,
                 seed=seed, progress=not as_json, dtype=dtype, device=device, batch_size=batch_size,
                 checkpointing=gradient_checkpointing, attacks=attacks, attack_params=parse_params(attack_params))
    click.echo(json.dumps(report) if as_json else table(report))
    if out and not as_json:
        click.echo(f"outputs: {out}/ (delta.safetensors, report.json, plots)")


@main.command("run")
@click.argument("request_file", type=click.Path(dir_okay=False))
@click.option("--workspace", default=".", show_default=True, type=click.Path(file_okay=False),
              help="the pipeline workspace (holds dvc.yaml, params.yaml, data/)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the table")
@friendly
def run_request(request_file, workspace, as_json):
    """Run a request through the pipeline (Prefect flow → DVC stages → MLflow)."""
    from pathlib import Path

    prefect_defaults()
    check_prefect()
    own_session_server()
    quiet_input_errors()
    from prefect.exceptions import CancelledRun

    from flows import lineage
    from flows.unlearn import unlearn as flow
    from razor.report import table
    from stages.workspace import Workspace

    try:
        result = flow(request_file, workspace)
    except CancelledRun as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(130)
    report = result["report"]
    if as_json:
        click.echo(json.dumps(report))
        return
    ws = Workspace(Path(workspace).resolve())
    click.echo(table(report))
    click.echo(f"stages run: {', '.join(result['stages_run']) or 'none (DVC found every stage up to date)'}")
    click.echo(f"MLflow run {report['mlflow_run_id']} · model version {report['model_version']} "
               f"of {result['registered_model']}")
    click.echo(f"  browse: mlflow ui --backend-store-uri {lineage.tracking_uri(ws)}")
    click.echo(f"  report: {ws.run_dir(result['request']) / 'report.html'}")


@main.group()
def demo():
    """The offline demo world and its models."""


@demo.command()
@click.option("--json", "as_json", is_flag=True)
def info(as_json):
    """The demo world's labels per axis."""
    from razor.demo.world import labels

    labs = {k: list(v) for k, v in labels().items()}
    if as_json:
        click.echo(json.dumps(labs))
    else:
        for axis, names in labs.items():
            click.echo(f"{axis:<11}{' '.join(names)}")


@demo.command()
@click.option("--data", type=click.Path(dir_okay=False), help="Parquet manifest (default: the demo world)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--exclude", help="leave this concept (label or axis:label) out: the retrain oracle")
@click.option("--steps", default=1500, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=SEED)
@friendly
def train(data, out, exclude, steps, seed):
    """Train the demo CLIP contrastively (about 7 minutes on 2 CPU cores)."""
    from razor.demo.dataset import demo_manifest
    from razor.demo.train import train as run

    record = run(data or demo_manifest(), out, exclude=exclude, steps=steps, seed=seed)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in record["test_accuracy"].items())
    click.echo(f"trained in {record['seconds']:.0f}s; zero-shot test accuracy: {acc}; saved to {out}")


@demo.command("train-vlm")
@click.option("--data", type=click.Path(dir_okay=False), help="Parquet manifest (default: the demo world)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--steps", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=SEED)
@friendly
def train_vlm(data, out, steps, seed):
    """Train the demo VLM (a tiny LLaVA on the demo CLIP's vision tower) on demo-world questions."""
    from razor.demo.vlm import train_vlm as run

    record = run(out, data, seed=seed, steps=steps)
    acc, held = (", ".join(f"{k} {v:.3f}" for k, v in record[key].items())
                 for key in ("test_accuracy", "test_accuracy_heldout_wordings"))
    click.echo(f"trained in {record['seconds']:.0f}s; test answer accuracy: {acc} (held-out wordings: {held}); "
               f"saved to {out}")


@demo.command("train-sd")
@click.option("--data", type=click.Path(dir_okay=False), help="Parquet manifest (default: the demo world)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--steps", default=2400, show_default=True, type=click.IntRange(min=1))
@click.option("--minutes", default=28.0, show_default=True, type=click.FloatRange(min=0), help="stop training after this long")
@click.option("--classifier-steps", default=600, show_default=True, type=click.IntRange(min=1),
              help="training steps of the image classifier that labels generations")
@click.option("--judge-steps", default=1200, show_default=True, type=click.IntRange(min=1),
              help="training steps of the independent judge of the final metrics")
@click.option("--seed", default=0, show_default=True, type=SEED)
@friendly
def train_sd(data, out, steps, minutes, classifier_steps, judge_steps, seed):
    """Train the demo diffusion model (a tiny pixel-space UNet on the demo CLIP's text tower) on objects × styles,
    then its image classifier."""
    from razor.demo.sd import train_sd as run

    record = run(out, data, seed=seed, steps=steps, minutes=minutes, classifier_steps=classifier_steps,
                 judge_steps=judge_steps)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in record["generated_accuracy"].items())
    click.echo(f"trained {record['steps']} steps in {record['seconds']:.0f}s; generated images labelled right: {acc}; "
               f"saved to {out}")


@demo.command("train-sd3")
@click.option("--data", type=click.Path(dir_okay=False), help="Parquet manifest (default: the demo world)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--steps", default=8000, show_default=True, type=click.IntRange(min=1))
@click.option("--minutes", default=35.0, show_default=True, type=click.FloatRange(min=0), help="stop training after this long")
@click.option("--seed", default=0, show_default=True, type=SEED)
@friendly
def train_sd3(data, out, steps, minutes, seed):
    """Train the demo SD3-style model (a tiny pixel-space MMDiT on the demo CLIP's text tower, by flow matching) on
    objects × styles; it ships the demo SD model's classifier/ and judge/."""
    from razor.demo.sd3 import train_sd3 as run

    record = run(out, data, seed=seed, steps=steps, minutes=minutes)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in record["generated_accuracy"].items())
    click.echo(f"trained {record['steps']} steps in {record['seconds']:.0f}s; generated images labelled right: {acc}; "
               f"saved to {out}")


@demo.command("train-judge")
@click.option("--model", "folder", default=None, type=click.Path(file_okay=False, exists=True),
              help="SD model folder (default: the demo SD model)")
@click.option("--steps", default=1200, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True, type=SEED)
@friendly
def train_judge(folder, steps, seed):
    """Train the independent judge of a demo-world SD folder's generations (judge/: a classifier from another seed,
    on images no split of the demo data holds), which the final metrics and the gate use instead of classifier/."""
    from razor.demo import DEMO_SD
    from razor.demo.sd import add_judge

    record = add_judge(folder or DEMO_SD, seed=seed, steps=steps)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in record["generated_accuracy"].items())
    click.echo(f"judge trained on {record['images']} images; generated images labelled right: {acc}")


@main.group()
def data():
    """Datasets as Parquet manifests."""


@data.command("import")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--layout", type=click.Choice(["folders", "unlearncanvas", "celeba", "imagenet", "webdataset"]),
              default="folders", show_default=True,
              help="folders: FOLDER/<label>/<image>; unlearncanvas: FOLDER/<style>/<object>/<image>; celeba: "
                   "FOLDER/img_align_celeba/ + identity_CelebA.txt; imagenet: FOLDER/{train,val}/<wnid>/<image>; "
                   "webdataset: FOLDER/*.tar shards of <key>.jpg + <key>.txt")
@click.option("--names", type=click.Path(dir_okay=False), help="celeba, imagenet, webdataset: '<id> <name>' per line")
@click.option("--top", type=click.IntRange(min=1), help="celeba: keep the identities with the most images")
@friendly
def import_(folder, out, seed, layout, names, top):
    """Manifest of an image folder (png/jpg): hashes, seeded splits, captions."""
    from razor import loaders
    from razor.data import import_folder, read_manifest

    if layout == "celeba":
        path = loaders.import_celeba(folder, out, names, top, seed=seed)
    elif layout == "imagenet":
        path = loaders.import_imagenet(folder, out, names, seed=seed)
    elif layout == "webdataset":
        path = loaders.import_webdataset(folder, out, names, seed=seed)
    else:
        path = (loaders.import_unlearncanvas if layout == "unlearncanvas" else import_folder)(folder, out, seed=seed)
    m = read_manifest(path, verify=False)
    counts = {s: len(m.split(s)) for s in ("train", "val", "test")}
    labels = ", ".join(f"{len(v)} {'labels' if axis == 'label' else axis}" for axis, v in m.labels().items())
    click.echo(f"{len(m)} images, {labels} {counts} → {path}")


@main.group()
def request():
    """Unlearning requests (YAML)."""


@request.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--data-root", default="data", show_default=True, type=click.Path(file_okay=False))
@friendly
def check(file, data_root):
    """Validate a request file and the data it names; print it normalised."""
    from pathlib import Path

    from razor.data import read_manifest
    from razor.request import load_request

    req = load_request(file)
    for which in ("forget_data", "retain_data"):
        if (path := req.data_path(which, Path(data_root))) is not None:
            read_manifest(path, verify=False, within=Path(data_root))
    click.echo(json.dumps(req.model_dump()))


WORKSPACE = click.option("--workspace", default=".", show_default=True, type=click.Path(file_okay=False),
                         help="the pipeline workspace (holds dvc.yaml, params.yaml, data/)")


def prefect_defaults():
    """No analytics, time for the ephemeral Prefect server's first start (on a fresh clone it took
    longer than Prefect's 20 s default), and MLflow's and the hub's progress bars only on a terminal
    (in a log each refresh would be a line)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class _OwnSession:
    """`subprocess` as Prefect's ephemeral server module sees it, with Popen starting a session of its
    own: a Ctrl-C at the terminal then reaches razor, which stops its stage and ends the flow run
    cancelled while the server still answers (in razor's process group the Ctrl-C would stop the
    server first, and the client would retry for minutes)."""

    Popen = functools.partial(subprocess.Popen, start_new_session=True)

    def __getattr__(self, name):
        return getattr(subprocess, name)


def own_session_server() -> None:
    from prefect.server.api import server

    server.subprocess = _OwnSession()


class _InputErrorsInOneLine(logging.Filter):
    """Prefect logs a run's exception with its traceback; an input error (RazorError) is the user's to
    fix, and the CLI prints it once, as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], RazorError))


def quiet_input_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _InputErrorsInOneLine) for f in logger.filters):
            logger.addFilter(_InputErrorsInOneLine())


def check_prefect() -> None:
    """A configured Prefect API (PREFECT_API_URL) must answer its health check within
    $RAZOR_SERVICE_TIMEOUT seconds (default 10); with none configured, flows run on an ephemeral server."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=float(os.environ.get("RAZOR_SERVICE_TIMEOUT", "10"))).raise_for_status()
    except httpx.HTTPError as e:
        raise RazorError(f"the Prefect API {url} cannot be reached ({type(e).__name__}: {str(e)[:120]}); start it "
                         "(`prefect server start`) or unset PREFECT_API_URL to run on an ephemeral server — nothing "
                         "was run") from e


def open_workspace(path: str):
    """The workspace at `path`, with MLflow pointed at its store (refused if the store does not answer)."""
    from pathlib import Path

    from stages.workspace import Workspace

    prefect_defaults()
    ws = Workspace(Path(path).resolve())
    if not (ws.root / "dvc.yaml").is_file():
        raise RazorError(f"{ws.root} has no dvc.yaml; run from the project root (or pass --workspace)")
    from flows import lineage

    ws.check_writable()
    lineage.check_store(ws)  # an unreachable store is named at once, not after MLflow's retries
    lineage.experiment(ws)
    return ws


@request.command()
@click.argument("file", type=click.Path(dir_okay=False))
@WORKSPACE
@friendly
def submit(file, workspace):
    """Validate a request (schema, model, data, paths, id) and queue it for `razor intake`."""
    from pathlib import Path

    from flows import queue

    req = queue.submit(open_workspace(workspace), Path(file))
    click.echo(f"queued {req.id}: forget {req.concept.kind} {req.concept.label!r} from {req.model} ({req.method})")


@request.command("list")
@WORKSPACE
@click.option("--json", "as_json", is_flag=True)
@friendly
def list_(workspace, as_json):
    """Every submitted request with its state and why."""
    from flows import queue

    ws = open_workspace(workspace)
    queue.reap(ws)
    rows = queue.entries(ws)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for e in rows:
        version = f" → {e['registered_model']} v{e['model_version']}" if e.get("model_version") else ""
        click.echo(f"{e['id']:<28}{e['state']:<9}{e['submitted']}{version}  {e['reason']}")


@main.command()
@WORKSPACE
@friendly
def intake(workspace):
    """Run every queued request now (oldest first), gate each, promote the ones that pass."""
    from prefect.exceptions import CancelledRun

    from flows.intake import intake as flow

    ws = open_workspace(workspace)
    check_prefect()
    own_session_server()
    quiet_input_errors()
    try:
        entries = flow(str(ws.root))
    except CancelledRun as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(130)
    for e in entries:
        click.echo(f"{e['id']}: {e['state']} — {e['reason']}")


@main.command()
@WORKSPACE
@click.option("--interval", type=int, help="seconds between intake runs")
@click.option("--cron", help="a cron schedule instead, e.g. '0 * * * *'")
@click.option("--start-server", is_flag=True, help="start a local Prefect server for this serve (stopped with it) "
              "instead of using PREFECT_API_URL's")
@click.option("--port", type=int, default=4200, show_default=True, help="the local server's port (--start-server)")
@friendly
def serve(workspace, interval, cron, start_server, port):
    """Serve the intake flow as a Prefect deployment on a schedule, one intake at a time (runs until stopped)."""
    from flows import schedule

    if (interval is None) == (cron is None):
        raise RazorError("give exactly one of --interval SECONDS or --cron 'EXPR'")
    ws = open_workspace(workspace)
    if start_server:
        schedule.serve_with_server(ws, port, interval, cron)
        return
    check_prefect()
    schedule.serve(ws, interval, cron)


@main.command()
@click.argument("request_id")
@click.option("--by", "approver", required=True, help="who answers (recorded in MLflow)")
@click.option("--reject", is_flag=True, help="refuse the version instead of promoting it")
@click.option("--reason", default="", help="why (recorded in MLflow)")
@WORKSPACE
@friendly
def approve(request_id, approver, reject, reason, workspace):
    """Answer an intake waiting for approval (params.yaml gate.approval: required): promote or --reject."""
    from flows import approval

    ws = open_workspace(workspace)
    check_prefect()
    approval.answer(ws, request_id, not reject, approver, reason)
    click.echo(f"{request_id}: {'rejected' if reject else 'approved'} by {approver}; the intake goes on "
               "(`razor request list` shows the outcome)")


@main.command()
@click.argument("model")
@click.option("--to", "version", required=True, help="the version to make production again")
@WORKSPACE
@friendly
def rollback(model, version, workspace):
    """Make an earlier version production again (its weights rebuilt and checked bit for bit)."""
    from flows import registry

    ws = open_workspace(workspace)
    before = registry.production(model)
    digest = registry.rollback(ws, model, version)
    click.echo(f"{model} production: v{before} → v{version} (weights sha256 {digest[:16]}…, as registered)")


@main.group()
def model():
    """Registered models and their versions."""


@model.command("export")
@click.argument("model_at_version", metavar="MODEL[@VERSION]")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="the folder to write the model to")
@WORKSPACE
@friendly
def export(model_at_version, out, workspace):
    """Write a version (default: production) as a full model folder that its library's `from_pretrained` reads."""
    from pathlib import Path

    from flows import registry
    from flows.audit import resolve

    ws = open_workspace(workspace)
    name, version = resolve(model_at_version)
    folder = registry.export(ws, name, version, Path(out).resolve())
    click.echo(f"{name} v{version} → {folder} (weights sha256 {registry.chain(name, version)[-1].tags['razor.weights_sha256'][:16]}…)")


@main.command()
@click.argument("model_at_version", metavar="MODEL[@VERSION]")
@WORKSPACE
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the chain as JSON here")
@friendly
def audit(model_at_version, workspace, json_out):
    """Rebuild a version's chain (requests, manifests, base, components, deltas, metrics) and re-hash
    every artifact; exit 1 naming each one that changed."""
    from flows.audit import audit as run
    from flows.audit import render, resolve
    from razor.io import atomic_path

    ws = open_workspace(workspace)
    result = run(ws, *resolve(model_at_version))
    click.echo(render(result))
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    if not result["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
