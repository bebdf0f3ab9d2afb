"""CLIP (transformers `CLIPModel`): components in the vision and text towers, F / R / M on image–
caption pairs, a probe that re-runs only the edited part from its frozen cache, and the
zero-shot protocol of METHOD.md §7 (FA@1/FA@5, utility, stability, leakage)."""

from razor.demo import DEMO_CLIP
from razor.families.clip import metrics
from razor.families.clip.adapter import load_clip
from razor.families.clip.cache import FrozenCache
from razor.families.clip.probe import ClipProbe
from razor.families.clip.task import ClipTask
from razor.family import Family
from razor.models import save_pretrained

FAMILY = Family(
    name="clip", kind="CLIP",
    detects=lambda files: files.get("config.json", {}).get("model_type") == "clip",
    load=load_clip, save=save_pretrained,
    towers=("vision", "text"), default_towers=("vision", "text"),
    methods=("razor", "slug", "ga", "graddiff", "ft", "salun", "retrain"),
    demo="demo", demo_folder=DEMO_CLIP,
    task=ClipTask, probe=ClipProbe, cache=FrozenCache,
    evaluate=metrics.evaluate, keys=metrics.keys, forget_and_utility=metrics.forget_and_utility,
    fixed=("logit_scale",),
)
