"""What differs between model families: the task's losses, the step-search probe, the frozen cache
and the metrics. Everything else (curation, scoring, the edit, the pipeline) is shared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from razor import metrics
from razor.cache import FrozenCache
from razor.errors import ModelError
from razor.output_cache import OutputCache
from razor.probe import Probe
from razor.sd import metrics as sd_metrics
from razor.sd.probe import SdProbe
from razor.sd.task import SdTask
from razor.task import Task
from razor.vlm import metrics as vlm_metrics
from razor.vlm.probe import VlmProbe
from razor.vlm.task import VlmTask


@dataclass(frozen=True)
class Family:
    task: type
    probe: type
    cache: type
    evaluate: Callable  # (task, reference, seed, bits) → (metrics, predictions)
    keys: Callable  # bits → the report's metric keys
    forget_and_utility: Callable  # task → (forget accuracy, utility) on the held-out items
    figure: Callable | None = None  # (task, {name: predictions}, path) → the family's own before/after figure


FAMILIES = {
    "clip": Family(Task, Probe, FrozenCache, metrics.evaluate, metrics.keys, metrics.forget_and_utility),
    "vlm": Family(VlmTask, VlmProbe, OutputCache, vlm_metrics.evaluate, vlm_metrics.keys, vlm_metrics.forget_and_utility),
    "sd": Family(SdTask, SdProbe, OutputCache, sd_metrics.evaluate, sd_metrics.keys, sd_metrics.forget_and_utility,
                 sd_metrics.figure),
}


def family(adapter) -> Family:
    if adapter.family not in FAMILIES:
        raise ModelError(f"{adapter.source!r} loads as a {adapter.family!r} model, but RAZOR cannot unlearn that family yet "
                         f"(it unlearns {', '.join(FAMILIES)})")
    return FAMILIES[adapter.family]


def load_task(adapter, sets, batch_size: int = 128):
    """The curated sets loaded as the task of `adapter`'s family."""
    return family(adapter).task.load(adapter, sets, batch_size)


def build_task(adapter, manifest, concept: str, **kw):
    """Curate `concept` from a manifest and load it as the task of `adapter`'s family."""
    return family(adapter).task.build(adapter, manifest, concept, **kw)
