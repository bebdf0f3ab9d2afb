"""The model-family contract: what a family (CLIP, Stable Diffusion, a LLaVA-style VLM, …) gives
the shared machinery. Each family lives in its own folder under `razor/families/` and is
registered there by one line; nothing outside its folder assumes a family.

A family is declared in its folder's `__init__.py` by what can be known without its model library
(how it is detected, its towers, methods and demo model); the rest lives in its `parts` module,
imported the first time a part is asked for, so naming or detecting a family loads no torch.

An adapter (what `load` returns) has `family` (the family's name), `model` (the editable
`nn.Module`), `source` (where it was loaded from), `layout` (None, or the checkpoint layout its
deltas name tensors in: razor.delta), `preprocess`, `device`, `parameters()`,
`components(granularity)` (METHOD.md §1) and `blocks()` (what gradient checkpointing recomputes).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


def _part(role: str, doc: str, optional: bool = False) -> property:
    def get(self):
        module = importlib.import_module(self.parts)
        if optional:
            return getattr(module, role, None)
        return getattr(module, role)
    return property(get, doc=doc)


@dataclass(frozen=True)
class Family:
    name: str  # the prefix of its registered models' names ("clip" → clip-demo)
    kind: str  # what it is, in words, for messages
    detects: Callable[[dict], bool]  # {file name: parsed JSON} of a model's config files → is it this family's
    towers: tuple[str, ...]  # the towers its components live in
    default_towers: tuple[str, ...]  # the candidates when a request names none
    methods: tuple[str, ...]  # the methods that can edit it
    demo: str | None  # the name of its demo model (`--model demo-sd`), if it has one
    demo_folder: Path | None
    parts: str  # the module holding the parts below (razor.families.<name>.parts)
    fixed: tuple[str, ...] = ()  # parameters the fine-tuning baselines leave alone (CLIP: the logit scale)
    # method parameters whose default on this family differs from the method's own, measured over its demo
    # labels (README): a request's or params.yaml's own value still wins (razor.methods.family_defaults)
    defaults: dict[str, Any] = field(default_factory=dict, compare=False)

    load = _part("load", "(source, torch dtype, device) → adapter")
    save = _part("save", "(adapter, folder) → a full model folder that `load` reads back bit for bit")
    task = _part("task", "a razor.task.Task subclass: its F, R and M (METHOD.md §6) on the curated sets")
    probe = _part("probe", "a razor.probe.Probe subclass: the step search's validation measures")
    cache = _part("cache", "the frozen-model cache (build(task), save(path, meta), load(path, task), frozen, summary())")
    evaluate = _part("evaluate", "(task, reference=None, seed=0, bits=BITS) → (metrics, predictions) (METHOD.md §7)")
    keys = _part("keys", "bits → the report's metric keys")
    forget_and_utility = _part("forget_and_utility",
                               "task → (forget accuracy, utility) on the held-out items (the gate's checks)")
    forget_share = _part("forget_share", "task → the forget accuracy alone, on the held-out forget items (the gate's check "
                         "of each earlier request on a chain, the attacks' ASR)")
    figure = _part("figure", "(task, {name: predictions}, path) → its own before/after figure, or None", optional=True)
    attacks = _part("attacks", "{name: attack(task, AttackParams) → [(budget, ASR), …]}: what tries to bring a "
                    "forgotten concept back (razor.attack)", optional=True)
    serving = _part("serving", "(adapter, curated sets) → (config, input example): what a registered version answers "
                    "in and an example of its input (razor.served)")
    serve = _part("serve", "(adapter, DataFrame, config) → DataFrame: the model's answers in its family's terms "
                  "(a registered version's MLflow pyfunc `predict`)")
    judge = _part("judge", "task → who labels its outputs where that is not the model itself, or None", optional=True)
