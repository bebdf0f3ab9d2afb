"""LLaVA-style VLMs (transformers `LlavaForConditionalGeneration`, LLaVA-NeXT's `LlavaNextForConditionalGeneration`): components in the vision tower
and the multimodal projector, F / R / M on question–answer pairs, a next-token probe, and FA /
utility on generated answers (METHOD.md §6–7)."""

from razor.demo import DEMO_VLM
from razor.family import Family

FAMILY = Family(
    name="vlm", kind="LLaVA-style VLM",
    detects=lambda files: files.get("config.json", {}).get("model_type") in ("llava", "llava_next"),
    towers=("vision", "projector"), default_towers=("vision", "projector"),
    methods=("razor", "slug", "ga", "graddiff", "ft"),
    demo="demo-vlm", demo_folder=DEMO_VLM, parts="razor.families.vlm.parts",
    # measured on every demo identity (README, benchmarks/results/sweep): the retain-shaped step forgets all 10 within
    # the bounds (the plain step, on the demo VLM before its retraining: 6), in a median of 15 probes (49)
    defaults=dict(precondition="retain"),
)
