"""Unlearning requests: a YAML file validated once against a typed schema.

    id: demo-object-star
    model: demo                  # demo, a folder under the data root, or a hub id
    concept: {kind: object, label: star}   # a VLM request may list several: {kind: identity, label: [hana, ivan]}
    forget_data: null            # manifest under the data root; null: the demo world
    retain_data: null            # manifest under the data root; null: the forget manifest
    method: razor
    params: {}                   # overrides of the method's defaults
    seed: 0
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from razor import yamlfile
from razor.config import MAX_SEED
from razor.errors import RazorError
from razor.methods import METHODS

MAX_BYTES = 64 * 1024
KIND_AXES = {"identity": "identities", "style": "styles", "object": "objects"}


class RequestError(RazorError):
    """A request file that cannot be accepted as it is."""


class Concept(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["identity", "style", "object"]
    label: str = Field(min_length=1, max_length=200)  # several labels are kept joined by "+"

    @field_validator("label", mode="before")
    @classmethod
    def _labels(cls, v):
        if not isinstance(v, list):
            return v
        if not v or not all(isinstance(x, str) and x and "+" not in x for x in v) or len(set(v)) != len(v):
            raise ValueError("a list of labels must hold distinct, non-empty names without '+'")
        return "+".join(v)

    @property
    def axis(self) -> str:
        return KIND_AXES[self.kind]

    def key(self, axes: list[str]) -> str:
        """`axis:label` on a manifest with these label axes: the kind's axis, or a plain folder
        import's one axis; a manifest labelled on other axes is refused with the ones it has."""
        if self.axis in axes:
            return f"{self.axis}:{self.label}"
        if len(axes) == 1:
            return f"{axes[0]}:{self.label}"
        raise RequestError(f"a request of kind {self.kind} forgets a label of axis {self.axis!r}, but the data is labelled "
                           f"on {', '.join(axes)}; set the kind to the axis that holds {self.label!r} "
                           f"({', '.join(k for k, a in KIND_AXES.items() if a in axes)})")


class Request(BaseModel):
    """One "forget this" request."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    model: str = Field("demo", min_length=1)
    concept: Concept
    forget_data: str | None = None
    retain_data: str | None = None
    method: str = "razor"
    params: dict = Field(default_factory=dict)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}; choose one of {', '.join(METHODS)}")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if Path(v).is_absolute() or ".." in Path(v).parts or "\0" in v:
            raise ValueError(f"{v!r} must be a demo model, a folder relative to the data root (without '..'), "
                             "or a hub id")
        return v

    @field_validator("forget_data", "retain_data")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None and (Path(v).is_absolute() or ".." in Path(v).parts or "\0" in v):
            raise ValueError(f"{v!r} must be a path relative to the data root, without '..'")
        return v

    def data_path(self, which: str, data_root: Path) -> Path | None:
        """The request's manifest resolved under the data root; refused if it leaves it."""
        rel = getattr(self, which)
        if rel is None:
            return None
        root = data_root.resolve()
        path = (root / rel).resolve()  # symlinks followed
        if not path.is_relative_to(root):
            raise RequestError(f"{which} {rel!r} resolves to {path}, outside the data root {root}; keep data inside it")
        if not path.is_file():
            raise RequestError(f"{which} {rel!r} does not exist under the data root {root}; import it with `razor data import`")
        return path


def load_request(path: str | Path) -> Request:
    """Read and validate a request file (strict YAML, at most 64 KiB)."""
    path = Path(path)
    if not path.exists():
        raise RequestError(f"request file {path} does not exist")
    raw = yamlfile.read(path, "request file", MAX_BYTES, RequestError)
    if not isinstance(raw, dict):
        raise RequestError(f"request file {path} must hold a mapping (id, model, concept, …), not {type(raw).__name__}")
    try:
        return Request.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'request'}: {_msg(err)}" for err in e.errors())
        raise RequestError(f"request file {path} is invalid: {problems}") from e


def _msg(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field (allowed: id, model, concept, forget_data, retain_data, method, params, seed)"
    return re.sub(r"\s+", " ", err["msg"])
