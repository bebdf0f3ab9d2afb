"""Stage rank: one-pass g_f and g_r, the ratio score of every component, the selection, a scatter plot."""

from __future__ import annotations

from razor.config import RankParams
from razor.families import of
from razor.plots import score_scatter
from stages.workspace import Workspace, main


def run(ws: Workspace, request_id: str) -> None:
    """Score every candidate component and choose the initial edit set; a baseline ranks nothing."""
    method = ws.method(request_id)
    if method != "razor":
        ws.skip(request_id, "rank", method)
        return score_scatter([], [], ws.plot(request_id, "scores.png"), f"{method} ranks no components here")
    from razor.editing import rank  # torch and the model code load only for a request that is ranked

    req, task = ws.task(request_id)
    p = ws.settings("rank", req, RankParams, of(task.adapter))
    info = dict(params=p.model_dump(mode="json"))
    with ws.output(request_id, "rank", info) as out:
        ranking = rank(task, p)
        ranking.save(out)
        info.update(selection=ranking.selection, components=len(ranking.scores))
    score_scatter(ranking.scores, ranking.selection, ws.plot(request_id, "scores.png"))


if __name__ == "__main__":
    main(run, "rank")
