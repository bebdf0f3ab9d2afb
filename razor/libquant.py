"""The `quant_lib` attack (razor.attack): forgetting re-checked after a real quantisation library's
weight formats that run on the CPU — bitsandbytes' row-wise int8 (LLM.int8's weight format) and its
4-bit FP4 and NF4 in blocks of 64. Every Linear weight takes the library's quantise → dequantise
round trip, which is what its quantised layers compute with on the CPU."""

from __future__ import annotations

from typing import Callable

import torch

from razor.config import AttackParams
from razor.quantize import rounded

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


def quant_lib_attack(measure: Callable) -> Callable:
    """A family's `quant_lib`, given its forget measure: the concept measured in each format."""

    def quant_lib(task, p: AttackParams) -> list[tuple[dict, float]]:
        from importlib.metadata import version

        library = f"bitsandbytes {version('bitsandbytes')}"
        out = []
        for fmt in FORMATS:
            with rounded(task.adapter.model, lambda w: roundtrip(w, fmt)):
                out.append((dict(format=fmt, library=library), measure(task)))
        return out

    return quant_lib
