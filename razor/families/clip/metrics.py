"""The CLIP protocol (METHOD.md §7): FA@1/FA@5, forget cosine, utility, stability, leakage,
and all of them again after 8-bit and 4-bit weight quantisation; where the data holds held-out
wordings (razor.templates), FA@1/FA@5, utility and stability under them too (`*_paraphrase`)."""

from __future__ import annotations

import numpy as np
import torch

from razor.families.clip.zeroshot import accuracy, image_embeddings, label_embeddings, ranks, worded_ranks
from razor.quantize import BITS, quantized

KEYS = ("fa1", "fa5", "forget_cos", "utility", "stability", "leakage", "fa1_q8", "fa1_q4")


def keys(bits=BITS) -> tuple[str, ...]:
    """The report's metric keys when re-checking under `bits`."""
    return KEYS[:6] + tuple(f"fa1_q{b}" for b in bits)


@torch.no_grad()
def predictions(task) -> dict:
    """Zero-shot rankings of the held-out forget items (concept axis) and retain items (every axis),
    under the label prompts and under each held-out wording."""
    a = task.adapter
    labels = label_embeddings(a, task.labels, task.prompts)
    forget = image_embeddings(a, task.forget_test.pixels)
    retain = image_embeddings(a, task.retain_test.pixels)
    return dict(
        forget_top=ranks(forget, {task.axis: labels[task.axis]}, k=5)[task.axis],
        forget_cos=(forget @ labels[task.axis][task.concept_id]).mean().item(),
        retain_top=ranks(retain, labels, k=1),
        forget_worded=[worded_ranks(a, forget, task.forget_test, task.labels[task.axis], w)
                       for w in task.wordings("heldout")],
        retain_worded={axis: [worded_ranks(a, retain, task.retain_test, labs, w, k=1)
                              for w in task.wordings("heldout", axis)] for axis, labs in task.labels.items()},
    )


def evaluate(task, reference: dict | None = None, seed: int = 0, bits=BITS) -> tuple[dict, dict]:
    """Metrics of the model as it is now (with fa1_q8 / fa1_q4), its predictions (the reference
    for stability), and under "quantized" the whole metric set again after each of `bits`."""
    out, pred = _metrics(task, reference, seed)
    out["quantized"] = {}
    for b in bits:
        with quantized(task.adapter.model, b):
            q, _ = _metrics(task, reference or pred, seed)
        out[f"fa1_q{b}"] = q["fa1"]
        out["quantized"][str(b)] = q
    return out, pred


def forget_and_utility(task) -> tuple[float, float]:
    """FA@1 on the held-out forget items and utility on the held-out retain items (no quantisation)."""
    pred = predictions(task)
    fa1 = (pred["forget_top"][:, 0] == task.concept_id).float().mean().item()
    return fa1, float(np.mean(list(accuracy(pred["retain_top"], task.retain_test.label_ids).values())))


def _metrics(task, reference: dict | None, seed: int) -> tuple[dict, dict]:
    cid = task.concept_id
    pred = predictions(task)
    top = pred["forget_top"]
    acc = accuracy(pred["retain_top"], task.retain_test.label_ids)
    out = dict(
        fa1=(top[:, 0] == cid).float().mean().item(),
        fa5=(top == cid).any(1).float().mean().item(),
        forget_cos=pred["forget_cos"],
        utility=float(np.mean(list(acc.values()))),
        stability=stability(pred["retain_top"], (reference or pred)["retain_top"], task.retain_test.label_ids),
        leakage=leakage(task, seed),
        utility_per_axis=acc,
        counts=dict(fa1=len(top), fa5=len(top), utility=sum(int((v >= 0).sum()) for v in task.retain_test.label_ids.values())),
    )
    if pred["forget_worded"]:
        held = paraphrased(task, pred, (reference or pred))
        out["counts"] |= held.pop("counts")
        out |= held
    return out, pred


def paraphrased(task, pred: dict, reference: dict) -> dict:
    """FA@1, FA@5 (mean over the concept axis's held-out wordings), utility and stability (mean over
    the axes' held-out wordings, then over axes) under wordings neither F nor the step search used."""
    cid = task.concept_id
    fa1, fa5, n = [], [], 0
    for top in pred["forget_worded"]:
        has = top[:, 0] >= 0
        n += int(has.sum())
        fa1.append((top[has, 0] == cid).float().mean().item())
        fa5.append((top[has] == cid).any(1).float().mean().item())
    utility, same, total = [], 0, 0
    for axis, tops in pred["retain_worded"].items():
        accs = []
        for top, ref in zip(tops, reference["retain_worded"][axis]):
            has = (task.retain_test.label_ids[axis] >= 0) & (top[:, 0] >= 0)
            if has.any():
                accs.append((top[has, 0] == task.retain_test.label_ids[axis][has]).float().mean().item())
                same += (top[has, 0] == ref[has, 0]).sum().item()
                total += int(has.sum())
        if accs:
            utility.append(float(np.mean(accs)))
    return dict(fa1_paraphrase=float(np.mean(fa1)), fa5_paraphrase=float(np.mean(fa5)),
                utility_paraphrase=float(np.mean(utility)), stability_paraphrase=same / max(total, 1),
                counts=dict(fa1_paraphrase=n, fa5_paraphrase=n, utility_paraphrase=total))


def stability(top: dict, reference: dict, label_ids: dict) -> float:
    """Share of retain (item, axis) top-1 predictions unchanged from the reference model."""
    same = total = 0
    for axis, t in top.items():
        has = label_ids[axis] >= 0
        same += (t[has, 0] == reference[axis][has, 0]).sum().item()
        total += int(has.sum())
    return same / max(total, 1)


@torch.no_grad()
def pair_features(task, pairs) -> np.ndarray:
    """Per-pair loss features for membership inference: caption cosine, concept-axis loss, entropy."""
    a = task.adapter
    scale = a.model.logit_scale.exp()
    labels = label_embeddings(a, task.labels, task.prompts)[task.axis]
    img = image_embeddings(a, pairs.pixels)
    txt = torch.cat([a.encode_texts(a.tokenize(b.captions)) for b in pairs.batches(512)])
    logp = (scale * img @ labels.T).log_softmax(1)
    true = logp[:, task.concept_id]
    entropy = -(logp.exp() * logp).sum(1)
    return torch.stack([(img * txt).sum(1), true, entropy, logp.max(1).values], 1).float().cpu().numpy()


def leakage(task, seed: int = 0) -> float:
    """Membership-inference leakage: 2·AUC − 1 (floored at 0) of a cross-validated logistic
    regression separating forget items (trained on) from never-trained items of the concept."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn (and SciPy) load only when measured
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    members = pair_features(task, task.forget)
    outsiders = np.concatenate([pair_features(task, task.forget_val), pair_features(task, task.forget_test)])
    n = min(len(members), len(outsiders))
    if n < 10:
        return 0.0
    rng = np.random.default_rng(seed)
    x = np.concatenate([members[rng.permutation(len(members))[:n]], outsiders[rng.permutation(len(outsiders))[:n]]])
    y = np.r_[np.ones(n), np.zeros(n)]
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=cv, method="predict_proba")[:, 1]
    return max(0.0, 2 * roc_auc_score(y, proba) - 1)
