"""Image–caption pairs in memory: pixels, captions, per-axis labels, and which pairs match."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from razor.data import Manifest, load_images


@dataclass
class Pairs:
    """A manifest's images loaded for one model: N×3×S×S pixels plus label ids per axis."""

    pixels: torch.Tensor
    captions: list[str]
    item_ids: list[str]
    labels: dict[str, list[str]]  # axis → the label vocabulary (all labels of the full manifest)
    label_ids: dict[str, torch.Tensor]  # axis → N ids (−1: the item has no label on that axis)
    mentions: dict[str, torch.Tensor]  # axis → N ids of the label the caption names (−1: none)

    def __len__(self) -> int:
        return len(self.captions)

    @classmethod
    def load(cls, manifest: Manifest, preprocess: dict, labels: dict[str, list[str]] | None = None) -> "Pairs":
        labels = labels or manifest.labels()
        pixels = torch.from_numpy(load_images(manifest, preprocess["size"], preprocess["mean"], preprocess["std"]))
        rows = manifest.rows
        ids, mentions = {}, {}
        for axis, labs in labels.items():
            index = {lab: i for i, lab in enumerate(labs)}
            ids[axis] = torch.tensor([index.get(r[axis], -1) if r[axis] is not None else -1 for r in rows])
            mentions[axis] = torch.tensor([_mentioned(r["caption"], labs) for r in rows])
        return cls(pixels, [r["caption"] for r in rows], [r["item_id"] for r in rows], labels, ids, mentions)

    def subset(self, index) -> "Pairs":
        index = torch.as_tensor(index, dtype=torch.long)
        idx = index.tolist()
        return Pairs(
            self.pixels[index], [self.captions[i] for i in idx], [self.item_ids[i] for i in idx], self.labels,
            {a: t[index] for a, t in self.label_ids.items()}, {a: t[index] for a, t in self.mentions.items()},
        )

    def join(self, other: "Pairs") -> "Pairs":
        """These pairs followed by `other`'s (loaded with the same label vocabulary)."""
        return Pairs(
            torch.cat([self.pixels, other.pixels]), self.captions + other.captions, self.item_ids + other.item_ids,
            self.labels, {a: torch.cat([t, other.label_ids[a]]) for a, t in self.label_ids.items()},
            {a: torch.cat([t, other.mentions[a]]) for a, t in self.mentions.items()},
        )

    def positives(self, images=None, captions=None) -> torch.Tensor:
        """[i, j] is true when caption j describes image i: every label it names is image i's."""
        images = slice(None) if images is None else images
        captions = slice(None) if captions is None else captions
        match = None
        for axis in self.labels:
            lab = self.label_ids[axis][images][:, None]
            men = self.mentions[axis][captions][None, :]
            ok = (men < 0) | (lab == men)
            match = ok if match is None else match & ok
        return match

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self.subset(range(start, min(start + batch_size, len(self))))


def _mentioned(caption: str, labels: list[str]) -> int:
    """Id of the longest label named as whole words in the caption, or −1."""
    text = f" {caption.lower()} "
    best, best_len = -1, 0
    for i, lab in enumerate(labels):
        if f" {lab.lower()} " in text and len(lab) > best_len:
            best, best_len = i, len(lab)
    return best

