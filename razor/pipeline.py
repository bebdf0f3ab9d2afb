"""The method's wiring, one for `razor.unlearn` and the DVC stages alike: cache → rank → edit for
RAZOR (or a baseline's edit), then the metrics after it against those before (METHOD.md §2–7)."""

from __future__ import annotations

import time

from razor.config import EditParams, RankParams, RazorParams
from razor.editing import EditResult, Ranking, candidates, edit, rank
from razor.errors import RazorError
from razor.families import of
from razor.methods import METHODS, edit_function
from razor.quantize import BITS
from razor.report import summarize
from razor.target import resolve


def check_method(name: str, adapter, params=None) -> None:
    """Refuse, before any work, a method the model's family cannot be edited with, or towers it does not have."""
    fam = of(adapter)
    if name in METHODS and name not in fam.methods:
        raise RazorError(f"method {name} does not edit {fam.kind} models; choose one of {', '.join(fam.methods)}")
    if getattr(params, "towers", None):
        candidates(adapter, params.towers, getattr(params, "granularity", "layer"))


def run_method(name: str, task, params, progress: bool = True) -> EditResult:
    """Edit the task's model in place with the named method, at its forget target resolved (razor.target)."""
    check_method(name, task.adapter)
    params, target = resolve(task, params)
    result = edit_function(name)(task, params, progress=progress)
    result.target = target
    return result


def build_cache(task):
    """One pass of θ0: what the edit reuses (the family's frozen cache)."""
    return of(task.adapter).cache.build(task)


def edit_from(task, p: EditParams, ranking: Ranking, cache, reuse: bool = True, progress: bool = True) -> EditResult:
    """The RAZOR edit from a ranking and the frozen cache (`reuse=False`: every probe runs the whole model)."""
    t0 = time.perf_counter()
    probe = of(task.adapter).probe(task, cache, reuse=reuse)
    frozen = cache.frozen if reuse else task.frozen_outputs()
    setup = time.perf_counter() - t0
    result = edit(task, p, ranking, probe, frozen, progress)
    result.timing = dict(cache=setup, **result.timing)
    result.timing["gradients"] = result.timing.get("gradients", 0.0) + ranking.seconds
    return result


def razor_edit(task, p: RazorParams, progress: bool = True) -> EditResult:
    """Score every component, edit the best few, and grow the edited set only while needed."""
    ranking = rank(task, p.part(RankParams))
    t0 = time.perf_counter()
    cache = build_cache(task)
    built = time.perf_counter() - t0
    result = edit_from(task, p.part(EditParams), ranking, cache, progress=progress)
    result.timing["cache"] += built
    return result


def metrics(task, reference=None, seed: int = 0, bits=BITS):
    """The family's metrics of the model as it is now (against `reference`, θ0's predictions) and its predictions."""
    return of(task.adapter).evaluate(task, reference=reference, seed=seed, bits=bits)


def after_edit(task, method: str, components: list[str], seconds: float, peak_mb: float, delta_bytes: int, timing: dict,
               before: dict, reference, seed: int = 0, bits=BITS, probes: dict | None = None, target: dict | None = None):
    """Measure the edited model; (the report, `figure(path)` drawing the family's own before/after
    figure, or None where it has none)."""
    fam = of(task.adapter)
    after, predicted = metrics(task, reference, seed, bits)
    out = summarize(method, task, components, seconds, peak_mb, delta_bytes, before, after, timing, bits, probes, target)
    figure = fam.figure and (lambda path: fam.figure(task, {"before": reference, method: predicted}, path))
    return out, figure
