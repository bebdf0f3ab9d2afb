"""Zero-shot classification: each axis's label prompts against image embeddings."""

from __future__ import annotations

import torch

from razor.templates import item_texts


@torch.no_grad()
def label_embeddings(adapter, labels: dict[str, list[str]], prompts: dict[str, str]) -> dict[str, torch.Tensor]:
    """Axis → L×D normalised text embeddings of that axis's label prompts."""
    return {axis: adapter.encode_texts(adapter.tokenize([prompts[axis].format(lab) for lab in labs]))
            for axis, labs in labels.items()}


@torch.no_grad()
def image_embeddings(adapter, pixels: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """N×D normalised image embeddings."""
    return torch.cat([adapter.encode_images(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])


def ranks(images: torch.Tensor, labels: dict[str, torch.Tensor], k: int = 5) -> dict[str, torch.Tensor]:
    """Axis → N×k label ids, best first (on the CPU, beside the items' label ids)."""
    return {axis: (images @ emb.T).topk(min(k, len(emb)), dim=1).indices.cpu() for axis, emb in labels.items()}


def accuracy(top: dict[str, torch.Tensor], label_ids: dict[str, torch.Tensor]) -> dict[str, float]:
    """Axis → top-1 accuracy over the items that have a label on that axis."""
    out = {}
    for axis, pred in top.items():
        has = label_ids[axis] >= 0
        if has.any():
            out[axis] = (pred[has, 0] == label_ids[axis][has]).float().mean().item()
    return out


@torch.no_grad()
def worded_ranks(adapter, images: torch.Tensor, pairs, labels: list[str], wording: str, k: int = 5) -> torch.Tensor:
    """N×k label ids, best first, under one wording of the axis's labels filled with each item's own
    labels on the other axes it names (rows of −1 where an item has none of them)."""
    texts = item_texts(wording, "{}", pairs)  # each item's wording with the label slot kept
    top = torch.full((len(images), min(k, len(labels))), -1, dtype=torch.long)
    for filled in sorted({t for t in texts if t is not None}):
        rows = torch.tensor([i for i, t in enumerate(texts) if t == filled])
        emb = adapter.encode_texts(adapter.tokenize([filled.format(lab) for lab in labels]))
        top[rows] = (images[rows.to(images.device)] @ emb.T).topk(top.shape[1], dim=1).indices.cpu()
    return top


@torch.no_grad()
def fa1(task, pixels: torch.Tensor) -> float:
    """FA@1 of images of the concept: the share the concept's label prompt ranks first on its axis."""
    labels = label_embeddings(task.adapter, {task.axis: task.labels[task.axis]}, task.prompts)[task.axis]
    top = (image_embeddings(task.adapter, pixels) @ labels.T).argmax(1).cpu()
    return (top == task.concept_id).float().mean().item()
