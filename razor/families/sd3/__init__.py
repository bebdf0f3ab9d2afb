"""Stable Diffusion 3 (the diffusers folder layout, without the T5 encoder): an MMDiT denoiser trained
by flow matching, read by two CLIP text encoders. What RAZOR does on it is what it does on SD-1.x
(razor.families.sd: the requests, F / R / M with the flow's velocity in ε's place, the probe,
UnlearnCanvas metrics, the judge, the attacks); this folder holds what differs, the adapter.
Components: both text encoders' blocks and heads, the joint attention's context stream, and (not by
default) its image stream."""

from razor.demo import DEMO_SD3
from razor.family import Family


def detects(files: dict) -> bool:
    """A diffusers pipeline whose denoiser is an SD3 MMDiT."""
    index = files.get("model_index.json", {})
    return (index.get("transformer") or [None, None])[1] == "SD3Transformer2DModel"


FAMILY = Family(
    name="sd3", kind="Stable Diffusion 3",
    detects=detects,
    towers=("text", "text_2", "ctx", "image"), default_towers=("text", "text_2", "ctx"),
    methods=("razor", "slug", "ga", "graddiff", "ft", "esd", "uce"),
    demo="demo-sd3", demo_folder=DEMO_SD3, parts="razor.families.sd3.parts",
    # measured on the demo SD3 (README): predict's steps land at the val draws' edge; at retain_tolerance 0.06 bisection
    # found no step that forgets noisy (both CLIP encoders carry it, so the edit needs the retain-shaped step); the noise
    # objective's context-stream steps "forgot" striped by drawing noise over the image, which the step search's
    # classifier reads as another style and the judge does not (UA 0.25); the embedding objective does not
    defaults=dict(search="bisect", precondition="retain", retain_tolerance=0.15, forget_objective="embedding"),
)
