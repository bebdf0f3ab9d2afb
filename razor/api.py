"""`razor.unlearn`: load a model and data, forget one concept with a named method, measure before/after,
and write the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

import razor.attack as attack
from razor.config import AttackParams
from razor.cost import measure
from razor.data import read_manifest
from razor.demo.dataset import demo_manifest
from razor.errors import DataError
from razor.families import DEMO_MODELS, build_task, load_model, of
from razor.io import atomic_dir, check_replaceable
from razor.methods import family_defaults, method_params
from razor.pipeline import after_edit, check_method, metrics, run_method


def unlearn(forget: str, model: str = "demo", data: str | Path | None = None, method: str = "razor",
            params: dict | None = None, out: str | Path | None = None, seed: int = 0,
            retain_size: int = 512, progress: bool = True, dtype: str = "fp32", device: str = "cpu",
            batch_size: int = 128, checkpointing: bool = False, attacks: str | list[str] | None = None,
            attack_params: dict | None = None) -> dict:
    """Forget `forget` (a label or axis:label) from `model`; return the before/after report.

    `dtype`, `device`: how the model loads; gradients accumulate over batches of `batch_size`;
    `checkpointing` recomputes block activations in the backward pass (less memory, more time).
    `attacks` ("all" or names, razor.attack) then try to bring the concept back, within the budgets
    `attack_params` (AttackParams), on the edited, base and oracle models: the report's `attacks`.
    With `out`, also write the delta, per-round log, scores, report and plots there (atomically).
    """
    torch.manual_seed(seed)
    chosen = method_params(method, params)
    budgets = AttackParams(**(attack_params or {})) if attacks else None
    if out is not None:
        check_replaceable(out, "report.json")
    adapter = load_model(model, dtype, device)
    chosen = family_defaults(chosen, of(adapter))
    check_method(method, adapter, chosen)
    if attacks:
        attack.chosen(of(adapter), attacks)
    if data is None:
        if model not in DEMO_MODELS:
            raise DataError("--data MANIFEST is required for a model other than the demo; create one with `razor data import`")
        data = demo_manifest()
    task = build_task(adapter, read_manifest(data), forget, retain_size=retain_size, seed=seed, batch_size=batch_size)
    task.checkpointing = checkpointing
    before, reference = metrics(task, seed=seed)
    base = {n: q.detach().clone() for n, q in adapter.parameters().items()} if attacks else None
    with measure() as cost:
        result = run_method(method, task, chosen, progress=progress)
    report, figure = after_edit(task, method, result.components, cost.seconds, cost.peak_mb, result.delta.nbytes,
                                result.timing, before, reference, seed, probes=result.probes, target=result.target)
    if attacks:
        report["attacks"] = attack.run(task, attacks, budgets, {n: base[n] for n in result.delta.touched(adapter)}, progress,
                                       oracle=chosen if method == "retrain" else None)
    if out is not None:
        write_outputs(Path(out), report, result, dict(model=model, data=str(data), seed=seed,
                                                      retain_size=retain_size, dtype=dtype, device=device,
                                                      batch_size=batch_size, checkpointing=checkpointing,
                                                      params=chosen.model_dump()), figure)
    return report


def write_outputs(out: Path, report: dict, result, run: dict, figure=None) -> Path:
    """delta.safetensors, rounds.parquet, scores.parquet, report.json and plots (with the family's
    own `figure(path)`, e.g. a diffusion model's image grid), all or nothing."""
    from razor.plots import before_after, expansion_trace, score_scatter

    with atomic_dir(out, "report.json") as tmp:
        result.delta.meta.update(forget=report["forget"], seed=run["seed"])
        result.delta.save(tmp / "delta.safetensors")
        if result.rounds:
            pq.write_table(pa.Table.from_pylist(result.rounds), tmp / "rounds.parquet")
            expansion_trace(result.rounds, tmp / "expansion_trace.png")
        if result.scores:
            pq.write_table(pa.Table.from_pylist(result.scores), tmp / "scores.parquet")
            score_scatter(result.scores, report["components"], tmp / "scores.png")
        before_after(report, tmp / "before_after.png")
        if figure:
            figure(tmp / "image_grid.png")
        (tmp / "report.json").write_text(json.dumps(dict(report, run=run), indent=2))
    return out
