"""Stable Diffusion 1.x/2.x (the diffusers folder layout): components in the text encoder and the
UNet's cross-attention, F (noise or embedding) / R / M on noised images, a probe that draws a few
DDIM images, and UnlearnCanvas UA / IRA / CRA judged by a classifier no edit touches (METHOD.md §6–7)."""

from razor.demo import DEMO_SD
from razor.family import Family


def detects(files: dict) -> bool:
    """A diffusers pipeline with one text encoder and a UNet (SDXL's second encoder is not this layout)."""
    index = files.get("model_index.json", {})
    return "unet" in index and "text_encoder" in index and index.get("text_encoder_2") is None


FAMILY = Family(
    name="sd", kind="Stable Diffusion",
    detects=detects,
    towers=("text", "xattn"), default_towers=("text", "xattn"),
    methods=("razor", "slug", "ga", "graddiff", "ft", "esd", "uce"),
    demo="demo-sd", demo_folder=DEMO_SD, parts="razor.families.sd.parts",
    # measured on every demo style and object (README, benchmarks/results/sweep), as on SD3: the embedding objective
    # and the retain-shaped step; with the noise objective and the plain step, solid stayed drawn (UA 0.06, 86 probes)
    defaults=dict(precondition="retain", retain_tolerance=0.10, forget_objective="embedding"),
)
