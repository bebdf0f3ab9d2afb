"""Components (METHOD.md §1): layer tensors and attention heads, addressed by name templates.

A component is a list of slices of weight tensors. A layer tensor is one whole weight; head h
of width d is rows [h·d, (h+1)·d) of q, k and v plus the same columns of the out projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GRANULARITIES = ("layer", "head", "both")
CLIP_BLOCK = {  # a CLIP encoder block's tensors (transformers' CLIPEncoderLayer: CLIP, SD's text encoder, LLaVA's vision tower)
    "q": "self_attn.q_proj.weight",
    "k": "self_attn.k_proj.weight",
    "v": "self_attn.v_proj.weight",
    "out": "self_attn.out_proj.weight",
    "fc1": "mlp.fc1.weight",
    "fc2": "mlp.fc2.weight",
}


@dataclass(frozen=True)
class Slice:
    """Rows (dim 0) or columns (dim 1) [start, stop) of one parameter; whole tensor if start is None."""

    param: str
    dim: int = 0
    start: int | None = None
    stop: int | None = None

    def index(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            return tensor
        return tensor.narrow(self.dim, self.start, self.stop - self.start)


@dataclass(frozen=True)
class Component:
    """An editable unit: `name` like "text.3.fc1" or "vision.1.head2"."""

    name: str
    tower: str
    layer: int
    kind: str  # q, k, v, out, fc1, fc2 or head
    slices: tuple[Slice, ...]

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.param for s in self.slices))

    def flat(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The concatenation of this component's slices of `tensors` (weights or gradients)."""
        return torch.cat([s.index(tensors[s.param]).reshape(-1) for s in self.slices])


@dataclass(frozen=True)
class Tower:
    """Where a tower's blocks live: name templates, as EasyEdit writes them."""

    name: str
    block: str  # e.g. "text_model.encoder.layers.{}"
    n_layers: int
    n_heads: int
    head_dim: int
    tensors: dict  # kind → parameter suffix, e.g. {"q": "self_attn.q_proj.weight", ...}


def enumerate_components(towers: list[Tower], granularity: str) -> list[Component]:
    """Every component of the towers at a granularity: layer tensors, heads, or both."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    out: list[Component] = []
    for t in towers:
        for layer in range(t.n_layers):
            prefix = t.block.format(layer)
            if granularity in ("layer", "both"):
                for kind, suffix in t.tensors.items():
                    out.append(Component(f"{t.name}.{layer}.{kind}", t.name, layer, kind, (Slice(f"{prefix}.{suffix}"),)))
            if granularity in ("head", "both"):
                for h in range(t.n_heads):
                    lo, hi = h * t.head_dim, (h + 1) * t.head_dim
                    slices = tuple(Slice(f"{prefix}.{t.tensors[k]}", 0, lo, hi) for k in ("q", "k", "v"))
                    slices += (Slice(f"{prefix}.{t.tensors['out']}", 1, lo, hi),)
                    out.append(Component(f"{t.name}.{layer}.head{h}", t.name, layer, "head", slices))
    return out
