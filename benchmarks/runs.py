"""What the demo benchmarks share: their command line (--methods, --requests, --json, --report) and one
`razor unlearn --json` process per (request, method), so peak MB is that process's resident
memory (model and data included). Each benchmark supplies its table's columns."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable


def unlearn_json(request: str, method: str, model: str | None = None, params: list[str] = (),
                 options: list[str] = ()) -> dict:
    """One `razor unlearn --json` process (with more `options`): its report, or {"failed": the error's last line}."""
    extra = [arg for p in params for arg in ("--param", p)]
    cmd = [sys.executable, "-m", "razor.cli", "unlearn", *(["--model", model] if model else []), "--forget", request,
           "--method", method, *extra, *options, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": (done.stderr.strip().splitlines() or ["(no output)"])[-1]}
    return json.loads(done.stdout)


def run_table(methods: list[str], requests: tuple[str, ...], columns: list[str], row: Callable[[dict], list[str]],
              model: str | None = None, params: Callable[[str, str], list[str]] | None = None,
              options: list[str] = ()) -> list[dict]:
    """Run every method on every request, print a Markdown table row per run, return the reports.
    `params(request, method)` gives the run's `KEY=VALUE` method parameters; `options`, more
    `razor unlearn` options for every run."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(methods))
    ap.add_argument("--requests", default=",".join(requests))
    ap.add_argument("--json", type=Path, help="also write every report to this file")
    ap.add_argument("--report", type=Path, help="print the table of a --json FILE written before (runs nothing)")
    ap.add_argument("--resume", action="store_true", help="keep the runs the --json FILE holds, run only the others")
    args = ap.parse_args()
    print("| request | method | " + " | ".join(columns) + " |")
    print("|" + "---|" * (len(columns) + 2))
    if args.report:
        reports = json.loads(args.report.read_text())
        for r in reports:
            print(f"| {r['forget']} | {r['method']} | " + " | ".join(row(r)) + " |")
        return reports
    reports = json.loads(args.json.read_text()) if args.resume and args.json and args.json.is_file() else []
    done = {(r["forget"], r["method"]) for r in reports}
    for r in reports:
        print(f"| {r['forget']} | {r['method']} | " + " | ".join(row(r)) + " |", flush=True)
    for request in args.requests.split(","):
        for method in args.methods.split(","):
            if (request, method) in done:
                continue
            r = unlearn_json(request, method, model, params(request, method) if params else [], options)
            if "failed" in r:
                print(f"| {request} | {method} | failed: {r['failed']} |", flush=True)
                continue
            reports.append(r)
            print(f"| {request} | {method} | " + " | ".join(row(r)) + " |", flush=True)
            if args.json:  # after every run: a long benchmark stopped midway keeps what it measured (--resume)
                args.json.write_text(json.dumps(reports, indent=2))
    return reports
