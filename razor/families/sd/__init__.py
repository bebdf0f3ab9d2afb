"""Stable Diffusion 1.x/2.x (the diffusers folder layout): components in the text encoder and the
UNet's cross-attention, F (noise or embedding) / R / M on noised images, a probe that draws a few
DDIM images, and UnlearnCanvas UA / IRA / CRA judged by a classifier no edit touches (METHOD.md §6–7)."""

from razor.demo import DEMO_SD
from razor.families.sd import metrics
from razor.families.sd.adapter import load_sd, save_sd
from razor.families.sd.probe import SdProbe
from razor.families.sd.task import SdTask
from razor.family import Family
from razor.output_cache import OutputCache


def detects(files: dict) -> bool:
    """A diffusers pipeline with one text encoder and a UNet (SDXL's second encoder is not this layout)."""
    index = files.get("model_index.json", {})
    return "unet" in index and "text_encoder" in index and index.get("text_encoder_2") is None


FAMILY = Family(
    name="sd", kind="Stable Diffusion",
    detects=detects, load=load_sd, save=save_sd,
    towers=("text", "xattn"), default_towers=("text", "xattn"),
    methods=("razor", "slug", "ga", "graddiff", "ft", "esd", "uce"),
    demo="demo-sd", demo_folder=DEMO_SD,
    task=SdTask, probe=SdProbe, cache=OutputCache,
    evaluate=metrics.evaluate, keys=metrics.keys, forget_and_utility=metrics.forget_and_utility,
    figure=metrics.figure, judge=lambda task: task.classifier.judge,
)
