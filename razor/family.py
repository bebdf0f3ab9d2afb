"""The model-family contract: what a family (CLIP, Stable Diffusion, a LLaVA-style VLM, …) gives
the shared machinery. Each family lives in its own folder under `razor/families/` and is
registered there by one line; nothing outside its folder assumes a family.

An adapter (what `load` returns) has `family` (the family's name), `model` (the editable
`nn.Module`), `source` (where it was loaded from), `preprocess`, `device`, `parameters()`,
`components(granularity)` (METHOD.md §1) and `blocks()` (what gradient checkpointing recomputes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Family:
    name: str  # the prefix of its registered models' names ("clip" → clip-demo)
    kind: str  # what it is, in words, for messages
    detects: Callable[[dict], bool]  # {file name: parsed JSON} of a model's config files → is it this family's
    load: Callable  # (source, torch dtype, device) → adapter
    save: Callable  # (adapter, folder) → a full model folder that `load` reads back bit for bit
    towers: tuple[str, ...]  # the towers its components live in
    default_towers: tuple[str, ...]  # the candidates when a request names none
    methods: tuple[str, ...]  # the methods that can edit it
    demo: str  # the name of its demo model (`--model demo-sd`)
    demo_folder: Path
    task: type  # a razor.task.Task subclass: its F, R and M (METHOD.md §6) on the curated sets
    probe: type  # a razor.probe.Probe subclass: the step search's validation measures
    cache: type  # the frozen-model cache (build(task), save(path, meta), load(path, task), frozen, summary())
    evaluate: Callable  # (task, reference=None, seed=0, bits=BITS) → (metrics, predictions) (METHOD.md §7)
    keys: Callable  # bits → the report's metric keys
    forget_and_utility: Callable  # task → (forget accuracy, utility) on the held-out items (the gate's checks)
    figure: Callable | None = None  # (task, {name: predictions}, path) → its own before/after figure
    fixed: tuple[str, ...] = ()  # parameters the fine-tuning baselines leave alone (CLIP: the logit scale)
    judge: Callable | None = None  # task → who labels its outputs, where that is not the model itself
