"""Stage cache: one pass of the frozen model → what the edit stage reuses (CLIP: label embeddings,
S_θ0 per retain batch, probe hidden states; VLM, diffusion: θ0's output per retain batch)."""

from __future__ import annotations

from stages.workspace import Workspace, main


def run(ws: Workspace, request_id: str) -> None:
    """Run θ0 once and store what the edit stage reuses (cache.safetensors); a baseline reads none."""
    method = ws.method(request_id)
    if method != "razor":
        return ws.skip(request_id, "cache", method)
    from razor import pipeline  # torch and the model code load only for a request that reads the cache

    _, task = ws.task(request_id)
    info = {}
    with ws.output(request_id, "cache", info) as out:
        cache = pipeline.build_cache(task)
        cache.save(out / "cache.safetensors", dict(request=request_id))
        info.update(cache.summary())


if __name__ == "__main__":
    main(run, "cache")
