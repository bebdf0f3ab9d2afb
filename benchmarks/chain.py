"""A long governance chain: 20 requests in a row on the demo CLIP through `razor intake`.

6 objects, 6 styles and 8 identities (each axis keeps two labels never forgotten), interleaved in a
fixed seeded order, each submitted and taken by one `razor intake` (so request N edits what request
N−1 produced), in a workspace of their own (default params.yaml, no attack stage). Per request: the
seconds of each stage (its MLflow stage run), of materialising the production version it starts
from, of the unlearn flow and of the gate; the gate's utility on the request's held-out retain
items (no forgotten concept among them) against the root model's; the FA@1 of every concept on the
chain. Results: benchmarks/results/chain/chain.json (rewritten after each request, so a killed run
resumes with --resume), chain.md and chain.png.
Usage: python benchmarks/chain.py [--requests 20] [--seed 0] [--resume] [--report] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "chain"
COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", "stages", "razor")
FORGOTTEN = {"objects": 6, "styles": 6, "identities": 8}
KIND = {"objects": "object", "styles": "style", "identities": "identity"}


def order(seed: int, n: int) -> list[tuple[str, str]]:
    """(axis, label) of each request: per axis its first labels after a seeded shuffle, the axes interleaved."""
    from razor.demo import world

    rng = random.Random(seed)
    picks = {axis: rng.sample(world.labels()[axis], k) for axis, k in FORGOTTEN.items()}
    slots = [axis for axis, k in FORGOTTEN.items() for _ in range(k)]
    rng.shuffle(slots)
    return [(axis, picks[axis].pop()) for axis in slots][:n]


def workspace(path: Path) -> Path:
    """The pipeline copied into a fresh git + DVC repo, with no requests and no attack stage."""
    for rel in COPIED:
        src, dst = ROOT / rel, path / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    params = (path / "params.yaml").read_text()
    params = params.replace("requests:\n  - demo-object-star\n", "requests: []\n").replace("  attacks: all ", "  attacks: none ")
    (path / "params.yaml").write_text(params)
    (path / ".gitignore").write_text("data/runs/\nmlflow.db\nmlartifacts/\ndata/models/\ndata/queue/\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@razor"], ["git", "config", "user.name", "bench"],
                [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
        subprocess.run(cmd, cwd=path, check=True, capture_output=True)
    return path


def razor(ws: Path, *args: str) -> str:
    out = subprocess.run([str(Path(sys.executable).parent / "razor"), *args, "--workspace", str(ws)],
                         capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if out.returncode != 0:
        raise SystemExit(f"razor {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def stage_seconds(ws: Path, run_id: str) -> dict:
    """Each stage's seconds: its MLflow stage run, open while the stage ran."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_run(run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{run_id}'")
    return {r.data.tags["razor.stage"]: round((r.info.end_time - r.info.start_time) / 1e3, 2) for r in runs}


def run(args) -> list[dict]:
    args.out.mkdir(parents=True, exist_ok=True)
    state = args.out / "chain.json"
    done = json.loads(state.read_text()) if args.resume and state.is_file() else {"rows": []}
    if done.get("workspace") and Path(done["workspace"]).is_dir():
        ws = Path(done["workspace"])
    else:
        ws, done = workspace(Path(tempfile.mkdtemp(prefix="razor-chain-"))), {"rows": []}
    done.update(workspace=str(ws), seed=args.seed, threads=os.environ.get("OMP_NUM_THREADS", "all"))
    plan = order(args.seed, args.requests)
    for i, (axis, label) in enumerate(plan[len(done["rows"]):], len(done["rows"]) + 1):
        rid = f"chain-{i:02d}-{label}"
        path = ws / "data" / f"{rid}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"id: {rid}\nmodel: demo\nconcept: {{kind: {KIND[axis]}, label: {label}}}\n")
        razor(ws, "request", "submit", str(path))
        clock = time.monotonic()
        razor(ws, "intake")
        wall = time.monotonic() - clock
        entry = json.loads((ws / "data" / "queue" / f"{rid}.json").read_text())
        stages = stage_seconds(ws, entry["mlflow_run_id"]) if entry.get("mlflow_run_id") else {}
        checks = entry.get("gate") or []
        row = dict(request=i, id=rid, concept=f"{axis}:{label}", state=entry["state"], reason=entry["reason"],
                   version=entry.get("model_version"), intake_seconds=round(wall, 1), seconds=entry.get("seconds", {}),
                   stages=stages, fa=[dict(concept=c["concept"], fa1=c["value"]) for c in checks if c["check"] == "forgotten"],
                   utility=next((dict(value=c["value"], root=c["root"]) for c in checks if c["check"] == "utility"), None))
        done["rows"].append(row)
        with open(state.with_suffix(".tmp"), "w") as f:
            json.dump(done, f, indent=2)
        os.replace(state.with_suffix(".tmp"), state)
        worst = max((c["fa1"] for c in row["fa"]), default=float("nan"))
        print(f"{i:2d} {rid:<24} {row['state']:<8} v{row['version']}  unlearn {row['seconds'].get('unlearn', 0):6.1f} s  "
              f"gate {row['seconds'].get('gate', 0):5.1f} s  materialise {row['seconds'].get('materialize', 0):4.1f} s  "
              f"worst FA@1 on the chain {worst:.2f}", flush=True)
    return done["rows"]


def report(rows: list[dict], out: Path) -> None:
    lines = ["| # | concept | state | version | materialise s | unlearn s | gate s | curate / cache / rank / edit / evaluate s "
             "| utility (root) | concepts on the chain | worst FA@1 on the chain |", "|" + "---|" * 11]
    for r in rows:
        s, st = r["seconds"], r["stages"]
        stages = " / ".join(f"{st[k]:.0f}" if k in st else "–" for k in ("curate", "cache", "rank", "edit", "evaluate"))
        u = r["utility"]
        utility = f"{u['value']:.3f} ({u['root']:.3f})" if u else "–"
        worst = max(r["fa"], key=lambda c: c["fa1"]) if r["fa"] else None
        worst_fa = f"{worst['fa1']:.2f} ({worst['concept']})" if worst else "–"
        lines.append(f"| {r['request']} | {r['concept']} | {r['state']} | {r['version'] or '–'} | {s.get('materialize', 0):.1f} | "
                     f"{s.get('unlearn', 0):.0f} | {s.get('gate', 0):.1f} | {stages} | {utility} | {len(r['fa'])} | {worst_fa} |")
    (out / "chain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, out / "chain.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["request"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    bottom = [0.0] * len(rows)
    for key, colour in (("materialize", "tab:gray"), ("unlearn", "tab:blue"), ("gate", "tab:orange")):
        ys = [r["seconds"].get(key, 0) for r in rows]
        axes[0].bar(x, ys, bottom=bottom, color=colour, label={"materialize": "materialise"}.get(key, key))
        bottom = [b + y for b, y in zip(bottom, ys)]
    axes[0].set(xlabel="request in the chain", ylabel="seconds", title="cost per request")
    for r in rows:
        axes[1].scatter([r["request"]] * len(r["fa"]), [c["fa1"] for c in r["fa"]], s=10, c="tab:red", alpha=0.6)
    axes[1].axhline(0.10, ls="--", c="k", lw=1, label="gate: FA@1 ≤ 0.10")
    axes[1].set(xlabel="request in the chain", ylabel="FA@1", title="every concept on the chain after each request", ylim=(-0.02, 1.02))
    ut = [(r["request"], r["utility"]) for r in rows if r["utility"]]
    axes[2].plot([i for i, _ in ut], [u["value"] for _, u in ut], "o-", label="the new version")
    axes[2].plot([i for i, _ in ut], [u["root"] for _, u in ut], "k--", label="the root model")
    axes[2].set(xlabel="request in the chain", ylabel="utility (held-out retain items)", title="utility on the labels kept")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_xticks(x)
    refused = [r["request"] for r in rows if r["state"] != "done"]
    fig.suptitle("20 requests in a row on the demo CLIP" + (f" (not promoted: {', '.join(map(str, refused))})" if refused else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="go on from benchmarks/results/chain/chain.json")
    ap.add_argument("--report", action="store_true", help="only rebuild the table and the plot")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = json.loads((args.out / "chain.json").read_text())["rows"] if args.report else run(args)
    report(rows, args.out)


if __name__ == "__main__":
    main()
