"""Attacks that try to bring a forgotten concept back. Each runs on the edited model, on the base
model (the ceiling: what it gets where nothing was removed) and, where a retrain oracle is cached,
on the oracle (the control: what it gets from a model that never learned the concept). Its success
(ASR) is the family's forget accuracy on the held-out forget items after the attack: FA@1 for CLIP,
FA for a VLM, the share of concept images judged the concept (1 − UA) for a diffusion model.

A family lists its attacks by name in its `attacks` part (the relearning ones of razor.relearn need
only its task's retain objective R, so any family can list them). An attack that compares the models
itself (`compares`: razor.membership's `mia`, whose ASR is an AUC) is run once with all of them."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from tqdm import tqdm

from razor.config import AttackParams, RetrainParams
from razor.errors import RazorError
from razor.families import of
from razor.family import Family

ALL = "all"
NONE = "none"


def available(fam: Family) -> dict:
    """name → attack(task, params) → [(budget, ASR), …] (the last is the attack's full budget)."""
    return dict(fam.attacks or {})


def chosen(fam: Family, names) -> list[str]:
    """`names` ("all", "a,b" or a list of names) checked against the family's attacks."""
    known = available(fam)
    if not known:
        raise RazorError(f"no attacks are registered for {fam.kind} models yet; run without --attacks "
                         f"(in the pipeline: attack.attacks none)")
    wanted = names.split(",") if isinstance(names, str) else list(names)
    wanted = [n.strip() for n in wanted if n.strip()]
    if wanted == [ALL]:
        return list(known)
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise RazorError(f"unknown attack {', '.join(unknown) or '(none named)'} for {fam.kind} models; "
                         f"name {ALL} or some of: {', '.join(known)}")
    return wanted


def planned(fam: Family, names) -> list[str]:
    """As `chosen`, for a pipeline whose params name them: "none", and "all" on a family that lists no
    attacks, choose none."""
    wanted = [names] if isinstance(names, str) else list(names)
    if wanted in ([NONE], []) or (wanted == [ALL] and not available(fam)):
        return []
    return chosen(fam, names)


@contextmanager
def restored(adapter):
    """Every parameter put back bit for bit when the block ends."""
    params = adapter.parameters()
    saved = {n: q.detach().clone() for n, q in params.items()}
    try:
        yield params
    finally:
        with torch.no_grad():
            for n, q in params.items():
                q.copy_(saved[n])


def oracle_weights(task, oracle=None) -> dict | None:
    """The weights of the retrain oracle trained with `oracle` (RetrainParams; default: its defaults)
    where the family has one and it is cached, else None."""
    if "retrain" not in of(task.adapter).methods:
        return None
    from razor.baselines.retrain import oracle_weights as cached  # a baseline loads when used

    return cached(task, oracle or RetrainParams())


def run(task, names, p: AttackParams, base: dict | None = None, progress: bool = True, oracle=None) -> dict:
    """name → {asr, base_asr, oracle_asr, budget, curve, seconds (per model)}: each attack on the model as the
    adapter holds it (the edited one), on it with `base` (the base values of the edited weights)
    written in, and on the cached oracle trained with `oracle` (RetrainParams); `*_asr` is None
    where that model is not at hand. The adapter's weights are bit-identical afterwards."""
    fam = of(task.adapter)
    fns = {n: available(fam)[n] for n in chosen(fam, names)}
    models = {"": {}, "base_": base, "oracle_": oracle_weights(task, oracle)}
    models = {k: w for k, w in models.items() if w is not None}

    @contextmanager
    def holding(weights: dict):
        """The edited model with `weights` written in, the random state seeded, all put back after."""
        with restored(task.adapter) as params, torch.random.fork_rng():
            torch.manual_seed(p.seed)
            with torch.no_grad():
                for n, v in weights.items():
                    params[n].copy_(v)
            yield

    out = {}
    for name, fn in tqdm(fns.items(), desc="attacks", disable=not progress, leave=False):
        t0 = time.perf_counter()
        if getattr(fn, "compares", False):  # it attacks every model itself (mia: one reference for all)
            out[name] = fn(task, p, models, holding)
        else:
            curves = {}
            for prefix, weights in models.items():
                with holding(weights):
                    curves[prefix] = fn(task, p)
            curve = [dict(budget=b, **{f"{k}asr": curves[k][i][1] if k in curves else None
                                       for k in ("", "base_", "oracle_")}) for i, (b, _) in enumerate(curves[""])]
            out[name] = dict(curve[-1], curve=curve)
        out[name]["seconds"] = round((time.perf_counter() - t0) / len(models), 3)  # per model attacked
        if getattr(fn, "note", None):  # what its figures mean for what is forgotten (the report says it)
            out[name]["note"] = fn.note
    return out
