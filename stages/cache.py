"""Stage cache: one pass of the frozen model → what the edit stage reuses (CLIP: label embeddings,
S_θ0 per retain batch, probe hidden states; VLM: answer-word log-probabilities per retain batch)."""

from __future__ import annotations

from razor.families import family
from stages.workspace import Workspace, main


def run(ws: Workspace, request_id: str) -> None:
    """Run θ0 once and store what the edit stage reuses (cache.safetensors)."""
    _, task = ws.task(request_id)
    info = {}
    with ws.output(request_id, "cache", info) as out:
        cache = family(task.adapter).cache.build(task)
        cache.save(out / "cache.safetensors", dict(request=request_id))
        info.update(retain_batches=len(cache.frozen))
        if hasattr(cache, "hidden"):
            info.update(blocks=len(cache.hidden), probe_images=len(cache.images))


if __name__ == "__main__":
    main(run, "cache")
