"""The retrain oracle: the demo recipe trained again without the concept's items."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from razor.config import RetrainParams
from razor.delta import Delta
from razor.demo.train import train
from razor.editing import EditResult
from razor.errors import ModelError
from razor.families.clip.zeroshot import fa1
from razor.io import home, sha256_file


def oracle_folder(task, p: RetrainParams) -> Path:
    """Where the oracle of this manifest and concept, trained with `p`, is cached."""
    exclude = f"{task.axis}:{task.label}"
    key = hashlib.sha256(f"{sha256_file(task.manifest_path)}|{exclude}|{p.steps}|{p.seed}".encode()).hexdigest()[:16]
    return home() / "oracles" / key


def retrain_edit(task, p: RetrainParams, progress: bool = True) -> EditResult:
    adapter = task.adapter
    if not (Path(adapter.source) / "training.json").is_file():
        raise ModelError(
            f"retrain needs the model's training recipe; {adapter.source} was not trained by `razor demo train` "
            "(no training.json). Use another method, or retrain the model yourself without the concept"
        )
    out = oracle_folder(task, p)
    if not (out / "model.safetensors").is_file():
        train(task.manifest_path, out, exclude=f"{task.axis}:{task.label}", seed=p.seed, steps=p.steps, progress=progress)
    state = load_file(str(out / "model.safetensors"))
    params = adapter.parameters()
    if any(n not in state or state[n].shape != q.shape for n, q in params.items()):
        raise ModelError(f"the retrained model in {out} does not match {adapter.source}'s architecture; "
                         "retrain with the manifest the model was trained on")
    base = {n: q.detach().clone() for n, q in params.items()}
    with torch.no_grad():
        for n, q in params.items():
            q.copy_(state[n])
    record = json.loads((out / "training.json").read_text())
    delta = Delta.from_diff(base, params, meta=dict(method="retrain", base=adapter.source, oracle=str(out), record=record),
                            layout=adapter.layout)
    delta.meta["components"] = delta.params
    return EditResult(delta, timing={"training (recorded)": record["seconds"]})


def oracle_weights(task, p: RetrainParams = RetrainParams()) -> dict[str, torch.Tensor] | None:
    """The cached oracle's weights (if `--method retrain` trained one for this data and concept), else None."""
    folder = oracle_folder(task, p) if task.manifest_path is not None else None
    if folder is None or not (folder / "model.safetensors").is_file():
        return None
    return load_file(str(folder / "model.safetensors"))


@torch.no_grad()
def oracle_fa(task, p: RetrainParams = RetrainParams()) -> tuple[float, Path] | None:
    """FA@1 of the cached oracle (if `--method retrain` trained one) on the forget-val items, the
    split the step search measures, with the model's weights put back afterwards; None without one."""
    state = oracle_weights(task, p)
    if state is None:
        return None
    folder, params = oracle_folder(task, p), task.adapter.parameters()
    base = {n: q.detach().clone() for n, q in params.items()}
    try:
        for n, q in params.items():
            q.copy_(state[n])
        fa = fa1(task, task.forget_val.pixels)
    finally:
        for n, q in params.items():
            q.copy_(base[n])
    return fa, folder
