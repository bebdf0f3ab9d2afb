"""The VLM's attacks (razor.attack): relearning (razor.relearn), a linear probe of the features the
projector receives, and the library quantisation formats (razor.libquant). Only the vision tower and the projector are ever edited: the language model
still holds whatever it knows of the concept's name, which no image attack here measures."""

from __future__ import annotations

import torch

from razor.config import AttackParams
from razor.families.vlm.metrics import forget_accuracy
from razor.libquant import quant_lib_attack
from razor.readout import linear_probe
from razor.relearn import relearn_attacks


@torch.no_grad()
def projector_inputs(adapter, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """N×D: the vision features the projector reads (the configured layer, LLaVA's patch selection), mean-pooled."""
    cfg = adapter.model.config
    layer = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, int) else cfg.vision_feature_layer[-1]
    tower = adapter.model.model.vision_tower
    out = []
    for s in range(0, len(pixels), batch_size):
        x = pixels[s:s + batch_size].to(adapter.device, adapter.model.dtype)
        h = tower(x, output_hidden_states=True).hidden_states[layer]
        out.append((h[:, 1:] if cfg.vision_feature_select_strategy == "default" else h).mean(1).float().cpu())
    return torch.cat(out)


def projector_probe(task, p: AttackParams) -> list[tuple[dict, float]]:
    """Can the concept still be read out of what the projector receives?"""
    targets = [task.labels[task.axis].index(t) for t in task.targets]
    return linear_probe(task, p, lambda pixels: projector_inputs(task.adapter, pixels), targets)


ATTACKS = relearn_attacks(forget_accuracy) | {"linear_probe": projector_probe, "quant_lib": quant_lib_attack(forget_accuracy)}
