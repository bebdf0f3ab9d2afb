"""CLIP (transformers `CLIPModel`, or an OpenCLIP checkpoint read onto it): components in the vision and text towers, F / R / M on image–
caption pairs, a probe that re-runs only the edited part from its frozen cache, and the
zero-shot protocol of METHOD.md §7 (FA@1/FA@5, utility, stability, leakage)."""

from razor.demo import DEMO_CLIP
from razor.family import Family

FAMILY = Family(
    name="clip", kind="CLIP",
    detects=lambda files: files.get("config.json", {}).get("model_type") == "clip" or "open_clip_config.json" in files,
    towers=("vision", "text"), default_towers=("vision", "text"),
    methods=("razor", "slug", "ga", "graddiff", "ft", "salun", "retrain"),
    demo="demo", demo_folder=DEMO_CLIP, parts="razor.families.clip.parts",
    fixed=("logit_scale",),
    # measured on every demo label (README, benchmarks/results/sweep): the retain-shaped step meets every CLIP bound of
    # the sweep on 25 of the 26 labels (the plain step: 8), in a median of 11 probes (19.5), and 50 retain-only
    # fine-tuning steps no longer bring the concept back (benchmarks/results/attacks/clip-precondition: star 0.33 → 0.05)
    defaults=dict(precondition="retain"),
)
