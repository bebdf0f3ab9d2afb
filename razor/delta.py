"""The Delta: only the edited slices, bound to the hashes of the weights they apply to.

Applying checks every touched base tensor's sha256 and refuses other weights; reverting
restores the replaced slices bit for bit. Stored as safetensors with a JSON header.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from razor.components import Component, Slice
from razor.errors import DeltaMismatchError, RazorError
from razor.io import atomic_path


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 over dtype, shape and the raw bytes of a tensor."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_sha256(model) -> str:
    """One hash over every parameter (name, dtype, shape, bytes), independent of file layout."""
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(f"{name}:{tensor_sha256(t)}\n".encode())
    return h.hexdigest()


@dataclass
class Delta:
    """New values for some slices of some parameters, and the hashes that bind them."""

    slices: list[Slice]
    values: list[torch.Tensor]
    base_sha256: dict[str, str]
    edited_sha256: dict[str, str]
    meta: dict = field(default_factory=dict)
    _stash: list[torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def from_edit(cls, base: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
                  components: list[Component], meta: dict | None = None) -> "Delta":
        """The delta of `components` between `base` copies and the edited `params`."""
        by_param: dict[str, list[Slice]] = {}
        for c in components:
            for s in c.slices:
                by_param.setdefault(s.param, []).append(s)
        slices = []
        for param, group in by_param.items():
            whole = [s for s in group if s.start is None]
            slices += whole[:1] if whole else list(dict.fromkeys(group))
        return cls._build(base, params, slices, meta)

    @classmethod
    def from_diff(cls, base: dict[str, torch.Tensor], params: dict[str, torch.Tensor], meta: dict | None = None) -> "Delta":
        """The delta of every parameter whose bytes changed (whole tensors)."""
        slices = [Slice(n) for n, t in params.items() if not torch.equal(t.detach(), base[n])]
        return cls._build(base, params, slices, meta)

    @classmethod
    def _build(cls, base, params, slices, meta) -> "Delta":
        names = list(dict.fromkeys(s.param for s in slices))
        return cls(
            slices=slices,
            values=[s.index(params[s.param].detach()).clone().cpu() for s in slices],
            base_sha256={n: tensor_sha256(base[n]) for n in names},
            edited_sha256={n: tensor_sha256(params[n]) for n in names},
            meta=dict(meta or {}),
        )

    @property
    def params(self) -> list[str]:
        return list(self.base_sha256)

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.values)

    def _check(self, params: dict[str, torch.Tensor], expected: dict[str, str], what: str) -> None:
        for name, digest in expected.items():
            if name not in params:
                raise DeltaMismatchError(f"the model has no parameter {name!r}; this delta was made for another architecture")
            actual = tensor_sha256(params[name])
            if actual != digest:
                raise DeltaMismatchError(
                    f"parameter {name!r} has sha256 {actual[:12]}… but this delta expects {what} {digest[:12]}…; "
                    f"load the exact base model the delta was made from ({self.meta.get('base', 'see its metadata')})"
                )

    def apply(self, params: dict[str, torch.Tensor]) -> None:
        """Write the edited slices into `params` after checking they are the delta's base weights."""
        self._check(params, self.base_sha256, "base")
        with torch.no_grad():
            self._stash = [s.index(params[s.param]).detach().clone() for s in self.slices]
            for s, v in zip(self.slices, self.values):
                s.index(params[s.param]).copy_(v.to(params[s.param].device, params[s.param].dtype))

    def revert(self, params: dict[str, torch.Tensor]) -> None:
        """Restore the slices `apply` replaced; the result is bit-identical to the base."""
        if self._stash is None:
            raise RazorError("this delta was not applied in this process; reload the base model instead of reverting")
        self._check(params, self.edited_sha256, "edited")
        with torch.no_grad():
            for s, v in zip(self.slices, self._stash):
                s.index(params[s.param]).copy_(v)
        self._stash = None
        self._check(params, self.base_sha256, "base")

    def save(self, path: str | Path) -> Path:
        header = {
            "slices": [[s.param, s.dim, s.start, s.stop] for s in self.slices],
            "base_sha256": self.base_sha256,
            "edited_sha256": self.edited_sha256,
            "meta": self.meta,
        }
        tensors = {f"slice{i}": v.contiguous() for i, v in enumerate(self.values)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"razor.delta": json.dumps(header)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Delta":
        path = Path(path)
        try:
            tensors = load_file(str(path))
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(json.loads(f.read(n))["__metadata__"]["razor.delta"])
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise RazorError(f"{path} is not a RAZOR delta in safetensors format ({e}); deltas are written by `razor unlearn --out`") from e
        slices = [Slice(p, d, a, b) for p, d, a, b in header["slices"]]
        return cls(slices, [tensors[f"slice{i}"] for i in range(len(slices))],
                   header["base_sha256"], header["edited_sha256"], header["meta"])
