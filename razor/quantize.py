"""Post-training weight quantisation (round-to-nearest, symmetric, per output channel)."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

BITS = (8, 4)  # the weight quantisations every family's metrics are re-checked under


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The weight after int`bits` quantisation and dequantisation, one scale per output row."""
    qmax = 2 ** (bits - 1) - 1
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
    return (weight / scale).round().clamp(-qmax - 1, qmax) * scale


@contextlib.contextmanager
def rounded(model: torch.nn.Module, roundtrip: Callable[[torch.Tensor], torch.Tensor]):
    """Within the block every Linear weight is `roundtrip(weight)` (stored in a format and read
    back); restored bit-exactly after."""
    saved = {}
    modules = dict(model.named_modules())
    try:
        with torch.no_grad():
            for name, mod in modules.items():
                if isinstance(mod, torch.nn.Linear):
                    saved[name] = mod.weight.detach().clone()
                    mod.weight.copy_(roundtrip(mod.weight))
        yield model
    finally:
        with torch.no_grad():
            for name, w in saved.items():
                modules[name].weight.copy_(w)


@contextlib.contextmanager
def quantized(model: torch.nn.Module, bits: int | None):
    """Within the block every Linear weight is quantised to `bits`; restored bit-exactly after."""
    if bits is None:
        yield model
        return
    with rounded(model, lambda w: fake_quantize(w, bits)):
        yield model
