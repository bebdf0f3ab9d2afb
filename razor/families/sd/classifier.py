"""The classifiers that label generated images (UnlearnCanvas: frozen style/object classifiers
that no edit can touch). A model folder ships up to two:
  - `classifier/`, the one the step search's probes query;
  - `judge/`, the one the final metrics and the gate use: trained apart (on other images, from
    another seed), so an edit tuned against the first is measured by a model it never queried.
Each is `classifier.json` + `model.safetensors` (`LabelNet`: a small CNN with one head per axis;
the demo diffusion model ships both) or a CLIP folder (`config.json`: that CLIP, zero-shot on the
task's label prompts). Without `classifier/` the
committed demo CLIP labels zero-shot; without `judge/` the final metrics use `classifier/` and
the report says they are not independent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as nnf
from safetensors.torch import load_file, save_file

from razor.demo import DEMO_CLIP
from razor.errors import DataError, ModelError
from razor.families.clip.adapter import load_clip
from razor.families.clip.zeroshot import label_embeddings


class Classifier:
    """Labels per axis of images in [-1, 1]; subclasses give the probabilities."""

    labels: dict[str, list[str]]
    judge: str  # who labels the images, in words (the report names it)

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """axis → N×L label probabilities."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> dict[str, list[str]]:
        """axis → the top label of each image."""
        return {a: [self.labels[a][i] for i in p.argmax(1).tolist()] for a, p in self.probabilities(images).items()}


class ClipClassifier(Classifier):
    """A CLIP model, zero-shot on label prompts."""

    def __init__(self, labels: dict[str, list[str]], prompts: dict[str, str], folder: str | Path = DEMO_CLIP):
        self.clip = load_clip(str(folder))
        self.judge = f"CLIP zero-shot on the label prompts ({folder})"
        self.labels = {a: list(labs) for a, labs in labels.items()}
        self.embeddings = label_embeddings(self.clip, self.labels, prompts)
        p = self.clip.preprocess
        self.mean, self.std = torch.tensor(p["mean"]).view(1, 3, 1, 1), torch.tensor(p["std"]).view(1, 3, 1, 1)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = ((images.cpu().float() + 1) / 2 - self.mean) / self.std
        size = self.clip.preprocess["size"]
        if x.shape[-1] != size:
            x = nnf.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        emb = torch.cat([self.clip.encode_images(b) for b in x.split(256)])
        scale = self.clip.model.logit_scale.exp()
        return {a: (scale * emb @ e.T).softmax(1) for a, e in self.embeddings.items()}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class LabelNet(nn.Module):
    """A small CNN (32/64/128 channels) on images in [-1, 1] with one linear head per axis."""

    def __init__(self, labels: dict[str, list[str]], size: int = 32):
        super().__init__()
        self.labels, self.size = {a: list(labs) for a, labs in labels.items()}, size
        self.body = nn.Sequential(_block(3, 32), nn.MaxPool2d(2), _block(32, 64), nn.MaxPool2d(2), _block(64, 128),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.heads = nn.ModuleDict({a: nn.Linear(128, len(labs)) for a, labs in self.labels.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(images)
        return {a: head(h) for a, head in self.heads.items()}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        (folder / "classifier.json").write_text(json.dumps(dict(labels=self.labels, size=self.size), indent=2))


class NetClassifier(Classifier):
    """A trained `LabelNet`."""

    def __init__(self, net: LabelNet, judge: str = "a LabelNet image classifier"):
        self.net = net.eval()
        self.labels = net.labels
        self.judge = judge

    @classmethod
    def load(cls, folder: str | Path) -> "NetClassifier":
        """From classifier.json and model.safetensors (no other weight format)."""
        folder = Path(folder)
        try:
            cfg = json.loads((folder / "classifier.json").read_text())
            net = LabelNet(cfg["labels"], cfg["size"])
            net.load_state_dict(load_file(folder / "model.safetensors"))
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            raise ModelError(f"cannot load the image classifier in {folder} ({str(e).splitlines()[0]}); it needs "
                             "classifier.json and model.safetensors") from e
        return cls(net, f"the image classifier in {folder} ({type(net).__name__})")

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.cpu().float()
        if x.shape[-1] != self.net.size:
            x = nnf.interpolate(x, size=(self.net.size,) * 2, mode="bicubic", align_corners=False)
        out = [self.net(b) for b in x.split(256)]
        return {a: torch.cat([o[a] for o in out]).softmax(1) for a in self.labels}


def _shipped(folder: Path, labels: dict[str, list[str]], prompts: dict[str, str]) -> Classifier | None:
    """The classifier in `folder` (a trained net or a CLIP), or None where there is none."""
    if (folder / "classifier.json").is_file():
        net = NetClassifier.load(folder)
        missing = [f"{a}:{lab}" for a, labs in labels.items() for lab in labs if lab not in net.labels.get(a, [])]
        if missing:
            raise DataError(f"the image classifier in {folder} cannot label {', '.join(missing)}; train one on this "
                            "data or remove it")
        return net
    if (folder / "config.json").is_file():
        return ClipClassifier(labels, prompts, folder)
    return None


def classifier_for(model_source: str, labels: dict[str, list[str]], prompts: dict[str, str]) -> Classifier:
    """The classifier the step search queries: the one `model_source` ships in `classifier/`, else
    the demo CLIP zero-shot (and its `judge` says so, for the report); its labels must cover the
    task's on every axis."""
    own = _shipped(Path(model_source) / "classifier", labels, prompts)
    if own is not None:
        return own
    judge = ClipClassifier(labels, prompts, DEMO_CLIP)
    judge.judge = (f"the demo CLIP zero-shot ({DEMO_CLIP}; {Path(model_source).name or model_source} ships no classifier/: "
                   "add one, a LabelNet or a CLIP folder, to judge its generations by a model of its own domain)")
    return judge


def judge_for(model_source: str, labels: dict[str, list[str]], prompts: dict[str, str],
              searched: Classifier) -> Classifier:
    """The classifier of the final metrics and the gate: the one `model_source` ships in `judge/`,
    else `searched` (the step search's own), named in the report as not independent."""
    own = _shipped(Path(model_source) / "judge", labels, prompts)
    if own is not None:
        return own
    same = copy.copy(searched)
    same.judge = (f"{searched.judge} — also the step search's classifier, so not an independent judge "
                  f"({Path(model_source).name or model_source} ships no judge/: `razor demo train-judge` adds one)")
    return same
