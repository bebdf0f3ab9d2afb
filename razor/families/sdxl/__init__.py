"""Stable Diffusion XL (the diffusers folder layout): two text encoders, the second's pooled
embedding and the image size in the UNet's added time embedding. What RAZOR does on it is what it
does on SD-1.x (razor.families.sd: F / R / M, the probe, UnlearnCanvas metrics, the judge, the
attacks); this folder holds what differs, the adapter. Components: both text encoders' blocks and
heads, and the UNet's cross-attention to_k / to_v."""

from razor.family import Family


def detects(files: dict) -> bool:
    """A diffusers pipeline with a UNet and both of SDXL's text encoders (the refiner has only the second)."""
    index = files.get("model_index.json", {})
    return "unet" in index and all((index.get(k) or [None])[0] for k in ("text_encoder", "text_encoder_2"))


FAMILY = Family(
    name="sdxl", kind="Stable Diffusion XL",
    detects=detects,
    towers=("text", "text_2", "xattn"), default_towers=("text", "text_2", "xattn"),
    methods=("razor", "slug", "ga", "graddiff", "ft", "esd", "uce"),
    demo=None, demo_folder=None, parts="razor.families.sdxl.parts",
)
