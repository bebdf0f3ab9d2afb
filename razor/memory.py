"""What a gradient pass keeps in memory: only the chosen parameters require gradients, and
(optionally) the blocks' activations are recomputed in the backward pass instead of stored."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def requires_grad_only(model: torch.nn.Module, names: set[str]):
    """Within the block, only the named parameters require gradients (memory: no other grads)."""
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(before[n])


@contextlib.contextmanager
def checkpointed(blocks: list[torch.nn.Module]):
    """Within the block, each module's forward keeps only its inputs for the backward pass and
    runs again there (gradient checkpointing: activation memory of one block instead of all)."""
    own = [block.__dict__.get("forward") for block in blocks]  # a forward set on the instance (hooks), else None
    try:
        for block in blocks:
            block.forward = functools.partial(_recompute, block.forward)
        yield
    finally:
        for block, forward in zip(blocks, own):
            if forward is None:
                del block.forward  # back to the class's forward
            else:
                block.forward = forward


def _recompute(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
