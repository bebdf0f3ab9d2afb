"""Methods by name (OpenUnlearning style): each is its params model and where its edit function
lives. The functions import when a method runs, so the names and params are known without torch
(the CLI's choices); which families a method edits is each family's `methods`."""

from __future__ import annotations

from importlib import import_module

from razor.config import EsdParams, RazorParams, RetrainParams, SlugParams, TrainParams, UceParams
from razor.errors import RazorError

METHODS = {
    "razor": (RazorParams, "razor.pipeline:razor_edit"),
    "slug": (SlugParams, "razor.baselines.slug:slug_edit"),
    "ga": (TrainParams, "razor.baselines.ga:ga_edit"),
    "graddiff": (TrainParams, "razor.baselines.graddiff:graddiff_edit"),
    "ft": (TrainParams, "razor.baselines.ft:ft_edit"),
    "salun": (TrainParams, "razor.baselines.salun:salun_edit"),
    "retrain": (RetrainParams, "razor.baselines.retrain:retrain_edit"),
    "esd": (EsdParams, "razor.baselines.esd:esd_edit"),
    "uce": (UceParams, "razor.baselines.uce:uce_edit"),
}


def method_params(name: str, overrides: dict | None = None):
    """The validated params of a method, defaults overridden by `overrides`."""
    if name not in METHODS:
        raise RazorError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name][0](**(overrides or {}))


def family_defaults(p, family):
    """`p` with its model family's defaults (Family.defaults) for the fields it was not given explicitly."""
    update = {k: v for k, v in family.defaults.items() if k in type(p).model_fields and k not in p.model_fields_set}
    return p.model_validate({**p.model_dump(exclude_unset=True), **update}) if update else p


def edit_function(name: str):
    """The method's edit function: (task, params, progress) → EditResult."""
    module, function = METHODS[name][1].split(":")
    return getattr(import_module(module), function)
