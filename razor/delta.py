"""The Delta: only the edited slices, bound to the hashes of the weights they apply to.

Applying checks every touched base tensor's sha256 and refuses other weights; reverting
restores the replaced slices bit for bit. Stored as safetensors with a JSON header. A delta names
the tensors of the checkpoint the model was loaded from: its parameters' own names, or where the
adapter has a `layout` (an OpenCLIP checkpoint: razor.families.clip.openclip), that file's keys, so
it applies to the file the user gave; one of another layout is refused by name.
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
    layout: str | None = None  # the checkpoint layout its names are in (None: the model's parameter names)
    _stash: list[torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def from_edit(cls, base: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
                  components: list[Component], meta: dict | None = None, layout=None) -> "Delta":
        """The delta of `components` between `base` copies and the edited `params` (in `layout`'s names, if any)."""
        by_param: dict[str, list[Slice]] = {}
        for c in components:
            for s in c.slices:
                by_param.setdefault(s.param, []).append(s)
        slices = []
        for param, group in by_param.items():
            whole = [s for s in group if s.start is None]
            slices += whole[:1] if whole else list(dict.fromkeys(group))
        return cls._build(base, params, slices, meta, layout)

    @classmethod
    def from_diff(cls, base: dict[str, torch.Tensor], params: dict[str, torch.Tensor], meta: dict | None = None,
                  layout=None) -> "Delta":
        """The delta of every parameter whose bytes changed (whole tensors; in `layout`'s names, if any)."""
        slices = [Slice(n) for n, t in params.items() if not torch.equal(t.detach(), base[n])]
        return cls._build(base, params, slices, meta, layout)

    @classmethod
    def _build(cls, base, params, slices, meta, layout=None) -> "Delta":
        if layout is not None:  # the checkpoint's tensors, before and after, and the slices in them
            keys = list(dict.fromkeys(layout.places[s.param].key for s in slices))
            base = {k: layout.assemble(k, {**params, **base}) for k in keys}
            params = {k: layout.assemble(k, params) for k in keys}
            slices = [layout.slice(s) for s in slices]
        names = list(dict.fromkeys(s.param for s in slices))
        return cls(
            slices=slices,
            values=[s.index(params[s.param].detach()).clone().cpu() for s in slices],
            base_sha256={n: tensor_sha256(base[n]) for n in names},
            edited_sha256={n: tensor_sha256(params[n]) for n in names},
            meta=dict(meta or {}),
            layout=None if layout is None else layout.name,
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

    def apply_to(self, adapter) -> None:
        """`apply` to a loaded model, by the names of the checkpoint it was loaded from; a delta of another
        layout is refused by name."""
        theirs = adapter.layout.name if adapter.layout is not None else None
        if self.layout != theirs:
            def said(layout):
                return f"the {layout} checkpoint layout" if layout else "the model's own parameter names"
            raise DeltaMismatchError(f"this delta names tensors in {said(self.layout)}, but {adapter.source} is loaded in "
                                     f"{said(theirs)}; apply it to the model it was made from "
                                     f"({self.meta.get('base', 'see its metadata')}), loaded from the same files")
        self.apply(weights(adapter))

    def touched(self, adapter) -> list[str]:
        """The names of the adapter's parameters this delta writes to."""
        if adapter.layout is None:
            return self.params
        return [n for k in self.params for n in adapter.layout.params_in(k)]

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
            "layout": self.layout,
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
                   header["base_sha256"], header["edited_sha256"], header["meta"], header.get("layout"))


def weights(adapter) -> dict[str, torch.Tensor]:
    """A loaded model's weights by the names its deltas use: its checkpoint layout's, else its parameters'."""
    return adapter.layout.tensors if adapter.layout is not None else adapter.parameters()
