"""Stage curate: request → forget / retain / eval manifests (Parquet, images embedded, sha256 per item)."""

from __future__ import annotations

from razor.config import CurateParams
from razor.curate import curate
from razor.data import read_manifest
from razor.demo.dataset import demo_manifest
from razor.families import DEMO_MODELS
from razor.io import sha256_file
from razor.methods import method_params
from razor.request import RequestError
from stages.workspace import Workspace, main, write_json


def run(ws: Workspace, request_id: str) -> None:
    """Select the request's items and write them as three self-contained manifests."""
    req = ws.request(request_id)
    p = CurateParams(**ws.params("curate"))
    method_params(req.method, req.params)  # unknown or invalid method params fail here, before any work
    if req.forget_data is None:
        if ws.root_model(req.model) not in DEMO_MODELS:
            raise RequestError(f"request {req.id}: forget_data is required for model {req.model!r}; "
                               "import a manifest with `razor data import` and name it in the request")
        source = demo_manifest()
    else:
        source = req.data_path("forget_data", ws.data)
    manifest = read_manifest(source, within=None if req.forget_data is None else ws.data)
    retain_path = req.data_path("retain_data", ws.data)
    retain = read_manifest(retain_path, within=ws.data) if retain_path else None
    concept = req.concept.key(manifest.axes)
    forgotten = tuple((ws.origin(req.model) or {}).get("forgotten", ()))  # by the versions this model descends from
    chosen = curate(manifest, concept, retain, p.forget_size, p.retain_size, p.eval_size, req.seed,
                    forgotten, p.kept_size, p.kept_total)
    info = dict(params=p.model_dump(), concept=chosen.concept, forgotten=list(chosen.forgotten), source=str(source),
                source_sha256=sha256_file(source),
                sizes={k: len(getattr(chosen, k)) for k in chosen.names})
    with ws.output(request_id, "curate", info) as out:
        info["sha256"] = chosen.write(out)
        write_json(out / "request.json", dict(req.model_dump(), concept_key=chosen.concept, batch_size=p.batch_size,
                                              dtype=p.dtype, device=p.device, gradient_checkpointing=p.gradient_checkpointing))


if __name__ == "__main__":
    main(run, "curate")
