"""Methods by name (OpenUnlearning style): each is (its params model, its edit function)."""

from __future__ import annotations

from razor.baselines.esd import esd_edit
from razor.baselines.ft import ft_edit
from razor.baselines.ga import ga_edit
from razor.baselines.graddiff import graddiff_edit
from razor.baselines.retrain import retrain_edit
from razor.baselines.salun import salun_edit
from razor.baselines.slug import slug_edit
from razor.baselines.uce import uce_edit
from razor.config import EsdParams, RazorParams, RetrainParams, SlugParams, TrainParams, UceParams
from razor.editing import EditResult, razor_edit
from razor.errors import RazorError

METHODS = {
    "razor": (RazorParams, razor_edit),
    "slug": (SlugParams, slug_edit),
    "ga": (TrainParams, ga_edit),
    "graddiff": (TrainParams, graddiff_edit),
    "ft": (TrainParams, ft_edit),
    "salun": (TrainParams, salun_edit),
    "retrain": (RetrainParams, retrain_edit),
    "esd": (EsdParams, esd_edit),
    "uce": (UceParams, uce_edit),
}


def method_params(name: str, overrides: dict | None = None):
    """The validated params of a method, defaults overridden by `overrides`."""
    if name not in METHODS:
        raise RazorError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name][0](**(overrides or {}))


ONLY = {"salun": ("clip",), "retrain": ("clip",), "esd": ("sd",), "uce": ("sd",)}
"""Methods for some families only: SalUn relabels caption pairs, retrain re-runs the demo CLIP's recipe,
ESD and UCE edit a diffusion UNet's cross-attention."""


def run_method(name: str, task, params, progress: bool = True) -> EditResult:
    family = task.adapter.family
    if family not in ONLY.get(name, (family,)):
        raise RazorError(f"method {name} works on {' and '.join(ONLY[name])} models only, and this is a {family} model; "
                         f"choose one of {', '.join(m for m in METHODS if family in ONLY.get(m, (family,)))}")
    return METHODS[name][1](task, params, progress=progress)
