"""Post-training weight quantisation (round-to-nearest, symmetric, per output channel)."""

from __future__ import annotations

import contextlib

import torch

BITS = (8, 4)  # the weight quantisations every family's metrics are re-checked under


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The weight after int`bits` quantisation and dequantisation, one scale per output row."""
    qmax = 2 ** (bits - 1) - 1
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
    return (weight / scale).round().clamp(-qmax - 1, qmax) * scale


@contextlib.contextmanager
def quantized(model: torch.nn.Module, bits: int | None):
    """Within the block every Linear weight is quantised to `bits`; restored bit-exactly after."""
    if bits is None:
        yield model
        return
    saved = {}
    try:
        with torch.no_grad():
            for name, mod in model.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    saved[name] = mod.weight.detach().clone()
                    mod.weight.copy_(fake_quantize(mod.weight, bits))
        yield model
    finally:
        with torch.no_grad():
            modules = dict(model.named_modules())
            for name, w in saved.items():
                modules[name].weight.copy_(w)
