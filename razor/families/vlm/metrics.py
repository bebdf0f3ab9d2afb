"""The VLM protocol (METHOD.md §7): forget accuracy FA (share of generated answers to the concept
question on held-out forget items that name a forgotten label; for a request of several labels,
also per label: `fa_per_label`, over the items of each), utility (accuracy of the
generated answers on held-out retain items, every question type, averaged over types), FA
again after 8-bit and 4-bit weight quantisation, and FA with the concept's question in the
adapter's held-out wordings, pooled (`fa_paraphrase`: neither F nor the step search ever asks
them). Answers these weights gave before (the evaluate stage's, the gate's) are read back from
the output store (razor.memo)."""

from __future__ import annotations

import numpy as np
import torch

from razor.families.vlm.adapter import names
from razor.families.vlm.task import VlmTask
from razor.quantize import BITS, quantized

MAX_NEW_TOKENS = 8


def keys(bits=BITS) -> tuple[str, ...]:
    """The report's metric keys when re-checking under `bits`."""
    return ("fa", "utility") + tuple(f"fa_q{b}" for b in bits)


def evaluate(task: VlmTask, reference: dict | None = None, seed: int = 0, bits=BITS) -> tuple[dict, dict]:
    """Metrics of the model as it is now (with fa_q8 / fa_q4), its answers, and under "quantized"
    the metric set again after each of `bits` (`reference` and `seed` are unused: the answers are greedy)."""
    out, answers = _metrics(task)
    if task.adapter.heldout.get(task.axis):
        said = [s for q in task.adapter.heldout[task.axis] for s in forget_answers(task, q)]
        out["fa_paraphrase"] = named_share(task, said)
        out["counts"]["fa_paraphrase"] = len(said)
    out["quantized"] = {}
    for b in bits:
        with quantized(task.adapter.model, b):
            q, _ = _metrics(task)
        out[f"fa_q{b}"] = q["fa"]
        out["quantized"][str(b)] = q
    return out, answers


def forget_and_utility(task: VlmTask) -> tuple[float, float]:
    """FA on the held-out forget items and utility on the held-out retain items (no quantisation)."""
    out, _ = _metrics(task)
    return out["fa"], out["utility"]


def forget_answers(task: VlmTask, wording: str | None = None) -> list[str]:
    """The generated answers to the concept's question (or its `wording`) on the held-out forget items."""
    forget = task.asked(task.forget_test, (task.axis,))
    questions = forget.questions if wording is None else [wording] * len(forget)
    return task.adapter.generate(forget.pixels, questions, MAX_NEW_TOKENS, remember=True)


def per_label(task: VlmTask, said: list[str]) -> dict[str, float]:
    """Each forgotten label's FA: the share of its held-out items' answers that name a forgotten label."""
    truth = task.asked(task.forget_test, (task.axis,)).answers
    return {t: named_share(task, [s for s, a in zip(said, truth) if a == t]) for t in task.targets if t in truth}


def named_share(task: VlmTask, said: list[str]) -> float:
    """The share of answers that name a label the request forgets."""
    return float(np.mean([any(names(s, t) for t in task.targets) for s in said]))


@torch.no_grad()
def forget_accuracy(task: VlmTask) -> float:
    """FA alone (the attacks' measure): no retain answers generated."""
    task.adapter.model.eval()
    return named_share(task, forget_answers(task))


@torch.no_grad()
def _metrics(task: VlmTask) -> tuple[dict, dict]:
    a = task.adapter
    a.model.eval()
    said_forget = forget_answers(task)
    retain = task.asked(task.retain_test)
    said_retain = a.generate(retain.pixels, retain.questions, MAX_NEW_TOKENS, remember=True)
    fa = named_share(task, said_forget)
    right: dict[str, list[bool]] = {}
    for axis, truth, s in zip(retain.axes, retain.answers, said_retain):
        right.setdefault(axis, []).append(names(s, truth))
    per_axis = {axis: float(np.mean(v)) for axis, v in right.items()}
    out = dict(fa=fa, utility=float(np.mean(list(per_axis.values()))), utility_per_axis=per_axis,
               counts=dict(fa=len(said_forget), utility=len(said_retain)))
    if len(task.targets) > 1:
        out["fa_per_label"] = per_label(task, said_forget)
    return out, dict(forget=said_forget, retain=said_retain)
