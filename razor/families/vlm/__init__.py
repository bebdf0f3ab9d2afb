"""LLaVA-style VLMs (transformers `LlavaForConditionalGeneration`): components in the vision tower
and the multimodal projector, F / R / M on question–answer pairs, a next-token probe, and FA /
utility on generated answers (METHOD.md §6–7)."""

from razor.demo import DEMO_VLM
from razor.families.vlm import metrics
from razor.families.vlm.adapter import load_llava
from razor.families.vlm.probe import VlmProbe
from razor.families.vlm.task import VlmTask
from razor.family import Family
from razor.models import save_pretrained
from razor.output_cache import OutputCache

FAMILY = Family(
    name="vlm", kind="LLaVA-style VLM",
    detects=lambda files: files.get("config.json", {}).get("model_type") == "llava",
    load=load_llava, save=save_pretrained,
    towers=("vision", "projector"), default_towers=("vision", "projector"),
    methods=("razor", "slug", "ga", "graddiff", "ft"),
    demo="demo-vlm", demo_folder=DEMO_VLM,
    task=VlmTask, probe=VlmProbe, cache=OutputCache,
    evaluate=metrics.evaluate, keys=metrics.keys, forget_and_utility=metrics.forget_and_utility,
)
