"""Per-example membership inference, the `mia` attack (razor.attack), in the LiRA / U-LiRA spirit.

Each candidate item's score (a family's per-item log-likelihood of the item's own description) under
the attacked model is calibrated by its score under a reference model that saw none of the
candidates — the retrain oracle where one is cached (else the score is used uncalibrated, and said
so). Members are the concept's training items the base model learned; non-members its held-out
items. The attack is reported as AUC and TPR at 1% FPR with bootstrap 95% intervals.

Before its figures count, the attack must show power on a positive control: the same statistic on a
copy of the model fine-tuned to memorise a few new items (members) against as many unseen ones,
calibrated by the model before that fine-tune. Without power, or where even the base model shows no
membership signal for the concept's items, it reports why ("no power", "no signal") and no ASR —
never a leakage of 0."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from razor.config import AttackParams
from razor.memory import requires_grad_only

FPR = 0.01
POWER = 0.6  # the control's AUC lower bound that counts as power


def roc(scores: np.ndarray, members: np.ndarray) -> tuple[float, float]:
    """(AUC, TPR at FPR ≤ 1%) of telling members (True) from non-members by a higher score."""
    pos, neg = scores[members], scores[~members]
    greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    cut = np.quantile(neg, 1 - FPR, method="higher")  # no more than 1% of non-members above it
    return float(greater), float((pos > cut).mean())


def summary(scores: np.ndarray, members: np.ndarray, seed: int, rounds: int = 400) -> dict:
    """AUC, TPR at 1% FPR and their bootstrap 95% intervals (members and non-members resampled apart)."""
    auc, tpr = roc(scores, members)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(members), np.flatnonzero(~members)
    draws = []
    for _ in range(rounds):
        pick = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        draws.append(roc(scores[pick], members[pick]))
    lo, hi = np.percentile(np.array(draws), [2.5, 97.5], axis=0).round(4).tolist()
    return dict(auc=round(auc, 4), tpr_at_1fpr=round(tpr, 4), ci=dict(auc=[lo[0], hi[0]], tpr_at_1fpr=[lo[1], hi[1]]),
                members=int(len(pos)), non_members=int(len(neg)))


def candidates(task, seed: int):
    """(members, non-members), as many of each: the concept's training items, its held-out items."""
    n = min(len(task.forget), len(task.forget_test))
    gen = torch.Generator().manual_seed(seed)
    return (task.forget.subset(torch.randperm(len(task.forget), generator=gen)[:n]),
            task.forget_test.subset(torch.randperm(len(task.forget_test), generator=gen)[:n]))


def statistic(task, score: Callable, members, others, reference: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's score under the model the adapter holds, less its reference score where given."""
    with torch.no_grad():
        s = score(task, members.join(others)).double().cpu().numpy()
    flags = np.r_[np.ones(len(members), bool), np.zeros(len(others), bool)]
    return (s if reference is None else s - reference), flags


def control(task, p: AttackParams, score: Callable, fixed: tuple[str, ...] = ()) -> dict:
    """The positive control, on the model as the adapter holds it (its weights are changed: run it
    inside razor.attack.restored): `mia_items` held-out retain items memorised by `mia_steps` Adam
    steps on R over them alone, against `mia_items` others the model never saw."""
    gen = torch.Generator().manual_seed(p.seed)
    pool = task.retain_test
    pick = torch.randperm(len(pool), generator=gen)[: 2 * p.mia_items]
    members, others = pool.subset(pick[: len(pick) // 2]), pool.subset(pick[len(pick) // 2:])
    before, flags = statistic(task, score, members, others, None)
    adapter = task.adapter
    params = {n: q for n, q in adapter.parameters().items() if n not in fixed}
    opt = torch.optim.Adam(params.values(), lr=p.mia_lr)
    for _ in range(p.mia_steps):
        with requires_grad_only(adapter.model, set(params)):
            loss = task.retain_loss(members)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    after, _ = statistic(task, score, members, others, before)
    found = summary(after, flags, p.seed)
    return dict(found, steps=p.mia_steps, lr=p.mia_lr, power=bool(found["ci"]["auc"][0] > POWER))


def verdict(edited: dict, base: dict, power: dict) -> str:
    """"no power" (the control is not told apart), "no signal" (the base model's own members are not
    told apart: nothing to unlearn in this sense), else "measured"."""
    if not power["power"]:
        return "no power"
    return "measured" if base["ci"]["auc"][0] > 0.5 else "no signal"


def mia_attack(score: Callable, fixed: tuple[str, ...] = ()) -> Callable:
    """A family's `mia`, given its per-item score (task, Pairs) → N log-likelihoods and the weights
    it never trains. It compares the models itself (razor.attack runs it once, not per model)."""

    def mia(task, p: AttackParams, models: dict, holding) -> dict:
        members, others = candidates(task, p.seed)
        reference = None
        if "oracle_" in models:
            with holding(models["oracle_"]):
                reference, _ = statistic(task, score, members, others, None)
        found = {}
        for prefix, weights in models.items():
            if prefix == "oracle_" and reference is not None:
                continue  # the reference itself: its calibrated scores are all 0, its AUC 0.5 by construction
            with holding(weights):
                found[prefix] = summary(*statistic(task, score, members, others, reference), p.seed)
        with holding(models.get("base_", {})):
            power = control(task, p, score, fixed)
        said = verdict(found[""], found.get("base_", found[""]), power)
        budget = dict(reference="oracle" if reference is not None else "none (uncalibrated: no oracle cached)",
                      control_items=p.mia_items, control_steps=p.mia_steps)
        point = dict(budget=budget, **{f"{k}asr": found[k]["auc"] if k in found and said == "measured" else None
                                       for k in ("", "base_", "oracle_")})  # no ASR without power or signal
        return dict(point, curve=[point], verdict=said, **{k: found[""][k] for k in ("auc", "tpr_at_1fpr", "ci")},
                    base=found.get("base_"), oracle=found.get("oracle_"), control=power)

    mia.compares = True
    return mia
