"""Stage evaluate: the metrics before and after the delta, re-checked after quantisation; metrics.json,
a before/after plot, report.json and a self-contained HTML report."""

from __future__ import annotations

from razor import pipeline
from razor.config import EvaluateParams
from razor.delta import Delta
from razor.plots import before_after
from razor.report import write_html
from stages.workspace import STAGES, Workspace, main, write_json

PLOTS = {"component scores": "edited_scores.png", "expansion trace": "expansion_trace.png", "before / after": "before_after.png",
         "generated images": "image_grid.png"}


def run(ws: Workspace, request_id: str) -> None:
    """Measure the base model, apply the delta, measure again; write the report."""
    stages = {s: ws.stage_info(request_id, s) for s in STAGES[:STAGES.index("evaluate")]}  # refuses a missing or unfinished stage
    req, task = ws.task(request_id)
    p = EvaluateParams(**ws.params("evaluate"))
    delta = Delta.load(ws.stage_dir(request_id, "edit") / "delta.safetensors")
    before, reference = pipeline.metrics(task, seed=req["seed"], bits=p.bits)
    delta.apply_to(task.adapter)
    edit = stages["edit"]
    method_stages = ("cache", "rank", "edit") if edit["method"] == "razor" else ("edit",)
    report, figure = pipeline.after_edit(task, edit["method"], edit["components"],
                                         sum(stages[s]["seconds"] for s in method_stages),
                                         max(stages[s]["peak_mb"] for s in method_stages), edit["delta_bytes"],
                                         edit["timing"], before, reference, req["seed"], p.bits, edit.get("probes"),
                                         edit.get("target"))
    if figure:
        figure(ws.plot(request_id, "image_grid.png"))
    lineage = dict(request=req, stages=stages)
    metrics = dict(before=report["before"], after=report["after"], seconds=report["seconds"],
                   peak_mb=report["peak_mb"], delta_bytes=report["delta_bytes"])
    before_after(report, ws.plot(request_id, "before_after.png"))
    with ws.output(request_id, "evaluate", dict(params=p.model_dump(mode="json"))) as out:
        write_json(out / "report.json", dict(report, lineage=lineage))
        write_html(report, {k: ws.plot(request_id, v) for k, v in PLOTS.items()}, out / "report.html", lineage)
    write_json(ws.results_dir(request_id) / "metrics.json", metrics)


if __name__ == "__main__":
    main(run, "evaluate")
