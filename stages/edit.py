"""Stage edit: the iterative RAZOR edit from the ranking and the cache → delta, per-round log, trace plot.

A baseline method (slug, ga, …) runs here in place of RAZOR, with its params from params.yaml's
`baselines` section and the request."""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.parquet as pq

from razor import pipeline
from razor.config import EditParams
from razor.cost import measure
from razor.editing import Ranking
from razor.families import of
from razor.methods import family_defaults, method_params
from razor.plots import expansion_trace, score_scatter
from razor.target import resolve
from stages.workspace import Workspace, main, write_json


def run(ws: Workspace, request_id: str) -> None:
    """Edit the ranked components (or run the request's baseline) and store the delta."""
    for before in ("cache", "rank"):
        ws.stage_info(request_id, before)  # refuses a missing or unfinished stage
    req, task = ws.task(request_id)
    reuse = bool(ws.params("edit").get("reuse_cache", True))
    progress = sys.stderr.isatty()
    if req["method"] == "razor":
        p = ws.settings("edit", req, EditParams, of(task.adapter), pipeline_only=("reuse_cache",))
        ranking = Ranking.load(ws.stage_dir(request_id, "rank"))
        cache = of(task.adapter).cache.load(ws.stage_dir(request_id, "cache") / "cache.safetensors", task)
        resolved, target = resolve(task, p)
        with measure() as cost:
            result = pipeline.edit_from(task, resolved, ranking, cache, reuse, progress)
        result.target = target
    else:
        p = family_defaults(method_params(req["method"], {**(ws.params("baselines").get(req["method"]) or {}),
                                                          **req["params"]}), of(task.adapter))
        with measure() as cost:
            result = pipeline.run_method(req["method"], task, p, progress=progress)
    info = dict(method=req["method"], params=p.model_dump(mode="json"), reuse_cache=reuse, components=result.components,
                timing={k: round(v, 3) for k, v in result.timing.items()}, probes=result.probes, target=result.target,
                seconds=round(cost.seconds, 3),
                peak_mb=round(cost.peak_mb, 1), delta_bytes=result.delta.nbytes)
    with ws.output(request_id, "edit", info) as out:
        result.delta.meta.update(forget=f"{task.axis}:{task.label}", request=request_id, seed=req["seed"])
        result.delta.save(out / "delta.safetensors")
        if result.rounds:
            pq.write_table(pa.Table.from_pylist(result.rounds), out / "rounds.parquet")
    rounds = [dict(step=i, **{k: r[k] for k in ("fa_val", "retain_val") if k in r}) for i, r in enumerate(result.rounds)]
    write_json(ws.results_dir(request_id) / "rounds.json", rounds)
    expansion_trace(result.rounds, ws.plot(request_id, "expansion_trace.png"))
    if req["method"] == "razor":
        score_scatter(ranking.scores, result.components, ws.plot(request_id, "edited_scores.png"),
                      title="component scores (red: edited, numbered in order; ★ the initial selection)",
                      initial=tuple(ranking.selection))
    else:
        score_scatter([], [], ws.plot(request_id, "edited_scores.png"), f"{req['method']} ranks no components here")


if __name__ == "__main__":
    main(run, "edit")
