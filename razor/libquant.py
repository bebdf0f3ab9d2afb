"""The `quant_lib` attack (razor.attack): forgetting re-checked after a real quantisation library's
weight formats that run on the CPU — bitsandbytes' row-wise int8 (LLM.int8's weight format) and its
4-bit FP4 and NF4 in blocks of 64. Every Linear weight takes the library's quantise → dequantise
round trip, which is what its quantised layers compute with on the CPU."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from razor.config import AttackParams

FORMATS = ("int8", "fp4", "nf4")  # the last, the strongest, is the attack's ASR
BLOCK = 64


def roundtrip(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """`weight` stored in the library's format `fmt` and read back."""
    import bitsandbytes.functional as bnb

    w = weight.detach().float()
    if fmt == "int8":
        q, scale, _ = bnb.int8_vectorwise_quant(w)
        out = bnb.int8_vectorwise_dequant(q, scale)
    else:
        q, state = bnb.quantize_4bit(w, blocksize=BLOCK, quant_type=fmt)
        out = bnb.dequantize_4bit(q, state)
    return out.reshape(weight.shape).to(weight.dtype)


@contextlib.contextmanager
def library_quantized(model: torch.nn.Module, fmt: str):
    """Within the block every Linear weight is in `fmt`; restored bit-exactly after."""
    saved = {}
    modules = dict(model.named_modules())
    try:
        with torch.no_grad():
            for name, mod in modules.items():
                if isinstance(mod, torch.nn.Linear):
                    saved[name] = mod.weight.detach().clone()
                    mod.weight.copy_(roundtrip(mod.weight, fmt))
        yield model
    finally:
        with torch.no_grad():
            for name, w in saved.items():
                modules[name].weight.copy_(w)


def quant_lib_attack(measure: Callable) -> Callable:
    """A family's `quant_lib`, given its forget measure: the concept measured in each format."""

    def quant_lib(task, p: AttackParams) -> list[tuple[dict, float]]:
        from importlib.metadata import version

        library = f"bitsandbytes {version('bitsandbytes')}"
        out = []
        for fmt in FORMATS:
            with library_quantized(task.adapter.model, fmt):
                out.append((dict(format=fmt, library=library), measure(task)))
        return out

    return quant_lib
