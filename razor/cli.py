"""The `razor` command line."""

from __future__ import annotations

import functools
import json
import sys

import click
import yaml
from pydantic import ValidationError

from razor.errors import RazorError

ROWS = (("fa1", "FA@1"), ("fa5", "FA@5"), ("forget_cos", "forget cosine"), ("utility", "utility"),
        ("stability", "stability"), ("leakage", "MIA leakage"), ("fa1_q8", "FA@1 (8-bit)"), ("fa1_q4", "FA@1 (4-bit)"))


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


def table(report: dict) -> str:
    lines = [f"{report['method']} — forget {report['forget']}",
             f"edited: {', '.join(report['components'][:8]) or '(nothing)'}"
             + (f" … (+{len(report['components']) - 8})" if len(report["components"]) > 8 else ""),
             f"{'metric':<16}{'before':>10}{'after':>10}"]
    for key, name in ROWS:
        lines.append(f"{name:<16}{report['before'][key]:>10.3f}{report['after'][key]:>10.3f}")
    lines.append(f"seconds {report['seconds']:.1f} · peak {report['peak_mb']:.0f} MB · delta {report['delta_bytes'] / 1024:.1f} KB")
    return "\n".join(lines)


@click.group()
def main():
    """RAZOR: targeted unlearning for transformer vision models."""


@main.command()
@click.option("--model", default="demo", show_default=True, help="demo, a local folder, or a hub id")
@click.option("--data", type=click.Path(dir_okay=False), help="Parquet manifest (default: the demo world)")
@click.option("--forget", required=True, help="the concept: a label, or axis:label")
@click.option("--method", default="razor", show_default=True,
              type=click.Choice(["razor", "slug", "ga", "graddiff", "ft", "salun", "retrain"]))
@click.option("--param", "params", multiple=True, help="method parameter KEY=VALUE (repeatable)")
@click.option("--out", type=click.Path(file_okay=False), help="folder for the delta, logs, report and plots")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the table")
@friendly
def unlearn(model, data, forget, method, params, out, seed, as_json):
    """Forget one concept and print the before/after table."""
    from razor.unlearn import unlearn as run

    report = run(forget, model=model, data=data, method=method, params=parse_params(params), out=out,
                 seed=seed, progress=not as_json)
    click.echo(json.dumps(report) if as_json else table(report))
    if out and not as_json:
        click.echo(f"outputs: {out}/ (delta.safetensors, report.json, plots)")


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
@click.option("--seed", default=0, show_default=True)
@friendly
def train(data, out, exclude, steps, seed):
    """Train the demo CLIP contrastively (about 7 minutes on 2 CPU cores)."""
    from razor.demo.dataset import demo_manifest
    from razor.demo.train import train as run

    record = run(data or demo_manifest(), out, exclude=exclude, steps=steps, seed=seed)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in record["test_accuracy"].items())
    click.echo(f"trained in {record['seconds']:.0f}s; zero-shot test accuracy: {acc}; saved to {out}")


@main.group()
def data():
    """Datasets as Parquet manifests."""


@data.command("import")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True)
@friendly
def import_(folder, out, seed):
    """Manifest of FOLDER/<label>/<image> (png/jpg): hashes, seeded splits, captions."""
    from razor.data import read_manifest, import_folder

    path = import_folder(folder, out, seed=seed)
    m = read_manifest(path, verify=False)
    counts = {s: len(m.split(s)) for s in ("train", "val", "test")}
    click.echo(f"{len(m)} images, {len(m.labels()['label'])} labels {counts} → {path}")


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

    from razor.request import load_request

    req = load_request(file)
    for which in ("forget_data", "retain_data"):
        req.data_path(which, Path(data_root))
    click.echo(json.dumps(req.model_dump()))


if __name__ == "__main__":
    main()
