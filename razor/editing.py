"""The RAZOR edit (METHOD.md §4–5): three-term direction, per-component step search, expansion."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from razor.components import Component
from razor.config import EditParams, RankParams, SearchParams
from razor.curvature import preconditioned, retain_moments
from razor.delta import Delta
from razor.errors import ModelError
from razor.families import of
from razor.probe import Measure, Probe
from razor.scoring import ratio_scores, select


@dataclass
class EditResult:
    """What a method returns: the delta, the per-round log and (for RAZOR/SLUG) the scores."""

    delta: Delta
    rounds: list[dict] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # seconds per phase, where a method reports them
    probes: dict = field(default_factory=dict)  # step-search probes run, partial and full-model apart
    target: dict | None = None  # the forget target it stopped at and where it came from (razor.target)

    @property
    def components(self) -> list[str]:
        return list(self.delta.meta.get("components", []))


@contextlib.contextmanager
def timed(timing: dict, phase: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timing[phase] += time.perf_counter() - t0


def set_step(c: Component, params: dict, origin: dict, direction: dict, eta: float) -> None:
    """In place: the component's slices = origin + η·direction (always from the same origin;
    η = 0 restores the origin bit for bit)."""
    with torch.no_grad():
        for s in c.slices:
            value = s.index(origin[s.param])
            s.index(params[s.param]).copy_(value if eta == 0 else value + eta * s.index(direction[s.param]))


def _short(t: dict) -> bool:
    """A trial that needs a larger step: within budget and short of the target, or (`search: predict`) met
    but not after quantisation."""
    return (t["ok"] and not t["met"]) or t.get("quantized_short", False)


def _enough(t: dict) -> bool:
    """A trial no larger step improves on: it meets the target, or it overshoots the retain budget."""
    return t["met"] or not (t["ok"] or t.get("quantized_short", False))


def step_search(probe: Probe, c: Component, params: dict, direction: dict, base: Measure,
                p: SearchParams, seed: tuple[float, Measure] | None = None) -> tuple[float, Measure, list[dict]]:
    """The step η for one component: the smallest that meets the forget target (also after
    `robust_bits` quantisation, `Measure.holds`) within the whole retain tolerance; otherwise the best
    forget gain − κ·retain loss within this edit's share of what remains. Leaves the model edited by
    the chosen η (0: unchanged). Retain is measured as agreement with θ0's predictions; with
    `keep_forgotten`, a step that lets an earlier forgotten concept back above the target is out of bounds.

    `search: predict`: each next step is predicted from the probes so far (`_next_eta`); the quantised
    check (`Measure.holds`) runs on the chosen step only; where it fails, the search goes on above it,
    or takes the smallest larger step that passed it. `search: bisect`: doubling, halving and geometric
    bisection to within 10 % (`_bisect_eta`); the quantised check (FA within the target) runs on the
    first met step at once and on the smallest met one at the end. Where nothing meets the target and a
    larger step no longer lowers the concept's probability, the search stops. `seed`: a step already
    measured along this direction (η, its measure), taken as the first probe."""
    origin = {n: params[n].detach().clone() for n in c.params}
    start = probe.current
    spent = max(0.0, base.retain - start.retain)
    partial_budget = spent + (p.retain_tolerance - spent) * p.budget_share
    kept_limit = p.kept_limit(start.kept_fa)
    w, d = c.flat(params).norm().item(), c.flat(direction).norm().item()
    if d == 0 or not math.isfinite(d):
        return 0.0, start, []
    tried: list[dict] = []
    predict = p.search == "predict"

    def within(m: Measure, budget: float) -> bool:
        return base.retain - m.retain <= budget + 1e-9 and m.kept_fa <= kept_limit + 1e-9

    def record(eta: float, m: Measure) -> None:
        met = m.fa <= p.goal
        ok = within(m, p.retain_tolerance if met else partial_budget)
        tried.append(dict(eta=eta, met=met and ok, ok=ok, measure=m, quantized_fa={}))

    def stalled() -> bool:
        """Nothing met, and a smaller step left the concept less likely than the largest one within budget."""
        up = max((t for t in tried if t["ok"] and not t["met"]), key=lambda t: t["eta"], default=None)
        return (up is not None and not any(t["met"] or t.get("quantized_short") for t in tried)
                and any(t["ok"] and t["eta"] < up["eta"] and t["measure"].concept_p <= up["measure"].concept_p for t in tried))

    def robust(t: dict) -> bool:
        """The quantised check of a met trial; where it fails, the target needs a larger step."""
        set_step(c, params, origin, direction, t["eta"])
        q = t["quantized_fa"][p.robust_bits] = probe.trial_quantized(p.robust_bits).fa
        if not t["measure"].holds(q, p):
            t["met"], t["ok"], t["quantized_short"] = False, within(t["measure"], partial_budget), predict
        return t["met"]

    if seed is not None:
        record(*seed)
    while True:
        if len(tried) < p.probes and not stalled():
            eta = _next_eta(tried, start, p.goal, w / d / 10) if predict else _bisect_eta(tried, w / d / 10)
            if eta is not None:
                set_step(c, params, origin, direction, eta)
                record(eta, probe.trial(c))
                if not predict and tried[-1]["met"] and p.robust_bits and not any(t["met"] and t["quantized_fa"] for t in tried[:-1]):
                    robust(tried[-1])  # the first met step at once: below a failed one, none would pass
                continue
        first = min((t for t in tried if t["met"]), key=lambda t: t["eta"], default=None)
        if first is None or not p.robust_bits or first["quantized_fa"] or robust(first):
            break
        if predict and any(t["met"] and t["quantized_fa"] for t in tried):  # a larger step held: each further check costs a whole-model probe
            break
    wins = [t for t in tried if t["met"]]
    if wins:
        best = min(wins, key=lambda t: t["eta"])
    else:
        def gain(t):
            m = t["measure"]
            return (start.concept_p - m.concept_p) - p.kappa * (start.retain - m.retain)

        partial = [t for t in tried if t["ok"] and t["measure"].concept_p < start.concept_p]
        best = max(partial, key=gain, default=None)
        if best is None or gain(best) <= 0:
            set_step(c, params, origin, direction, 0.0)
            return 0.0, start, tried
    set_step(c, params, origin, direction, best["eta"])
    return best["eta"], best["measure"], tried


def _bisect_eta(tried: list[dict], first: float) -> float | None:
    """`search: bisect`'s next step: double or halve from the first, then bisect geometrically; None once
    the smallest step that is enough (met, or over the budget) is within 10 % of the largest short one."""
    up = max(filter(_short, tried), key=lambda t: t["eta"], default=None)
    down = min(filter(_enough, tried), key=lambda t: t["eta"], default=None)
    if up and down and down["eta"] / up["eta"] < 1.1:
        return None
    return (math.sqrt(up["eta"] * down["eta"]) if up and down else
            down["eta"] / 2 if down else up["eta"] * 2 if up else first)


def _next_eta(tried: list[dict], start: Measure, target: float, first: float) -> float | None:
    """The next step to probe, or None once the bracket is narrow: within 10 % around the smallest met
    step, within 25 % below a step that overshoots the retain budget without meeting the target (a
    partial step needs less precision). `up`: the largest step that needs more; `down`: the smallest
    that meets the target or overshoots. Where the probes give margins, FA's gap to the target is
    taken as linear in η through the two nearest probes (η = 0: the start) and the next step aims
    5 % past its root, kept inside the bracket; otherwise the bracket is bisected (geometrically)."""
    if not tried:
        return first
    up = max(filter(_short, tried), key=lambda t: t["eta"], default=None)
    down = min(filter(_enough, tried), key=lambda t: t["eta"], default=None)
    if up and down and down["eta"] / up["eta"] < (1.1 if down["met"] else 1.25):
        return None

    def gap(t: dict | None) -> float | None:  # η = 0 (t None) is the start; a step short only quantised has none
        return None if t is not None and t.get("quantized_short") else (start if t is None else t["measure"]).gap(target)

    def root(a: dict | None, b: dict) -> float | None:
        """Where the gap, linear through a (None: η = 0) and b, reaches 0 (None where it does not fall)."""
        ga, gb, ea = gap(a), gap(b), 0.0 if a is None else a["eta"]
        if ga is None or gb is None or not (math.isfinite(ga) and math.isfinite(gb)) or gb >= ga:
            return None
        return ea + (b["eta"] - ea) * ga / (ga - gb)

    if down:
        guess = root(up, down) if down["met"] else None
        if up is None:
            return min(max(1.05 * guess if guess else down["eta"] / 2, down["eta"] / 8), down["eta"] / 1.1)
        lo, hi = up["eta"], down["eta"]
        if guess is None:
            return math.sqrt(lo * hi)
        return min(max(1.05 * guess, lo * (hi / lo) ** 0.2), hi * (lo / hi) ** 0.2)
    below = max((t for t in tried if _short(t) and t["eta"] < up["eta"]), key=lambda t: t["eta"], default=None)
    guess = root(below, up)
    return min(max(1.05 * guess, 1.25 * up["eta"]), 8 * up["eta"]) if guess else 2 * up["eta"]


def direction(c_names: list[str], g_f: dict, g_r: dict, g_m: dict | None, p: EditParams) -> dict:
    """d = λ_f·ρ·g_f − g_r − λ_m·∇M, per parameter."""
    out = {}
    for n in c_names:
        d = p.lambda_f * p.rho * g_f[n] - g_r[n]
        if g_m is not None:
            d = d - p.lambda_m * g_m[n]
        out[n] = d
    return out


@dataclass
class Ranking:
    """The rank phase's result: one-pass gradients, every component's score, the initial selection."""

    g_f: dict[str, torch.Tensor]
    g_r: dict[str, torch.Tensor]
    scores: list[dict]
    selection: list[str]
    params: RankParams
    seconds: float = 0.0

    def save(self, folder: Path) -> None:
        """gradients.safetensors, scores.parquet and selection.json in `folder`."""
        grads = {f"{w}/{n}": g.contiguous() for w, part in (("g_f", self.g_f), ("g_r", self.g_r)) for n, g in part.items()}
        save_file(grads, folder / "gradients.safetensors")
        pq.write_table(pa.Table.from_pylist(self.scores), folder / "scores.parquet")
        (folder / "selection.json").write_text(json.dumps(dict(
            selection=self.selection, params=self.params.model_dump(mode="json"), seconds=self.seconds), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "Ranking":
        sel = json.loads((folder / "selection.json").read_text())
        grads = load_file(folder / "gradients.safetensors")
        part = {w: {k.split("/", 1)[1]: v for k, v in grads.items() if k.startswith(w + "/")} for w in ("g_f", "g_r")}
        return cls(part["g_f"], part["g_r"], pq.read_table(folder / "scores.parquet").to_pylist(), sel["selection"],
                   RankParams(**sel["params"]), sel["seconds"])


def candidates(adapter, towers: tuple[str, ...] | None, granularity: str) -> dict[str, Component]:
    """The components of `towers` (default: the family's) at a granularity; a tower the family does
    not have is refused by name, and so is a selection that leaves nothing to edit."""
    fam = of(adapter)
    towers = towers or fam.default_towers
    absent = [t for t in towers if t not in fam.towers]
    if absent:
        raise ModelError(f"{fam.kind} models have no tower {', '.join(absent)}; choose towers among "
                         f"{', '.join(fam.towers)} (default: {', '.join(fam.default_towers)})")
    comps = {c.name: c for c in adapter.components(granularity) if c.tower in towers}
    if not comps:
        raise ModelError(f"this model has no {granularity} components in the towers {', '.join(towers)}; "
                         f"choose towers among {', '.join(fam.towers)}")
    return comps


def rank(task, p: RankParams) -> Ranking:
    """g_f and g_r in one pass over D_f and D_r, the ratio score of every candidate, the selection."""
    t0 = time.perf_counter()
    comps = candidates(task.adapter, p.towers, p.granularity)
    names = sorted({n for c in comps.values() for n in c.params})
    task.use_objective(p.forget_objective)
    g_f, g_r = task.forget_gradient(names, p.kept_weight), task.retain_gradient(names)
    scores = ratio_scores(list(comps.values()), task.adapter.parameters(), g_f, g_r, p.alpha, p.alignment, p.normalize)
    return Ranking(g_f, g_r, scores, select(scores, p.select, p.k, p.tau), p, time.perf_counter() - t0)


def edit(task, p: EditParams, ranking: Ranking, probe: Probe, frozen: list[torch.Tensor] | None,
         progress: bool = True) -> EditResult:
    """Edit the ranked selection with the three-term step; expand while the targets are unmet.

    `frozen`: S_θ0 of each retain batch (the drift term; None drops it). The edit takes over the
    ranking's gradients (it empties `ranking.g_f`, `ranking.g_r`), so that only one set is held."""
    adapter = task.adapter
    rp = ranking.params
    params = adapter.parameters()
    comps = candidates(adapter, rp.towers, rp.granularity)
    names = sorted(ranking.g_f)
    g_f, g_r = ranking.g_f, ranking.g_r
    ranking.g_f = ranking.g_r = {}  # the only reference is ours: a round's fresh gradients replace them
    base: dict[str, torch.Tensor] = {}  # θ0 of every tensor a step touched (the delta's base)
    timing = defaultdict(float)
    task.use_objective(p.forget_objective)
    m0 = probe.current
    frozen = frozen if p.lambda_m > 0 and p.mode == "one_step" else None

    def toward(tried: list[Component]) -> dict[str, dict]:
        """Each component about to be tried → its three-term direction (∇M only for their tensors; 0 at
        θ0), shaped by the retain curvature if asked."""
        own = sorted({n for c in tried for n in c.params})
        for n in own:
            base.setdefault(n, params[n].detach().clone())
        with timed(timing, "gradients"):
            drift = task.drift_gradient(own, frozen) if frozen is not None and r > 0 else None
        d = direction(own, g_f, g_r, drift, p)
        if p.precondition == "none":
            return {c.name: d for c in tried}
        with timed(timing, "curvature"):
            moments = retain_moments(task, own)
            return {c.name: preconditioned(c, d, moments, p.damping) for c in tried}

    scores = ranking.scores
    edited: list[str] = []
    stuck: set[str] = set()  # components of a round where none found a step: later rounds try the next ones
    rounds: list[dict] = []
    bar = tqdm(total=p.max_rounds, desc="RAZOR rounds", disable=not progress, leave=False)
    for r in range(p.max_rounds):
        if g_f is None:  # one-step mode, and the last round changed the model
            with timed(timing, "gradients"):
                g_f, g_r = task.forget_gradient(names, p.kept_weight), task.retain_gradient(names)
            scores = ratio_scores(list(comps.values()), params, g_f, g_r, rp.alpha, rp.alignment, rp.normalize)
        score_of = {s["component"]: s for s in scores}
        ranked = [s["component"] for s in sorted(scores, key=lambda s: -s["score"]) if s["component"] not in {*edited, *stuck}]
        several = r == 0 and (len(ranking.selection) > 1 or p.search == "bisect")
        if several:  # the initial selection, each edited in turn
            d = toward([comps[n] for n in ranking.selection])
            steps = [lambda c=comps[n]: (c, *step_search(probe, c, params, d[c.name], m0, p)) for n in ranking.selection]
        else:  # the selection (later rounds: the top component) and the next ones, `candidates` in all
            if not ranked:
                break
            head = ranking.selection if r == 0 else ranked[:1]
            shortlist = [comps[n] for n in dict.fromkeys([*head, *ranked])][: p.candidates]
            d = toward(shortlist)
            choose = _first_promising if p.search == "predict" else _best_candidate
            steps = [lambda: choose(probe, shortlist, params, d, m0, p)]
        stepped = len(edited)
        for run in steps:
            if probe.met(p):
                break
            counted = dict(probe.counts)
            with timed(timing, "step search"):
                c, eta, _, tried = run()
                if eta == 0:  # the selection's component, or every candidate of the round
                    stuck.update([c.name] if several else [s.name for s in shortlist])
                else:
                    edited.append(c.name)
                    probe.refresh(c, taken=next(t for t in tried if t["eta"] == eta))
                met = probe.met(p)
            s, now = score_of[c.name], probe.current
            rounds.append(dict(round=r, component=c.name, score=s["score"], importance=s["importance"], cos=s["cos"],
                               eta=eta, **{f"{k}_probes": probe.counts[k] - counted[k] for k in counted}, fa_val=now.fa,
                               concept_p_val=now.concept_p, retain_val=now.retain, accuracy_val=now.accuracy,
                               kept_fa_val=now.kept_fa, met=met))
        if p.mode == "one_step" and len(edited) > stepped:
            g_f = g_r = None  # the next round computes its own on the edited model (a round that stepped nothing keeps them)
        bar.update(1)
        bar.set_postfix(fa=f"{probe.current.fa:.2f}", retain=f"{probe.current.retain:.3f}")
        if probe.met(p):
            break
    bar.close()
    delta = Delta.from_edit(base, params, [comps[n] for n in edited],
                            meta=dict(method="razor", components=edited, base=adapter.source), layout=adapter.layout)
    return EditResult(delta, rounds, ranking.scores, dict(timing), dict(probe.counts))


def _best_candidate(probe: Probe, candidates: list[Component], params: dict, d: dict[str, dict], m0: Measure,
                    p: SearchParams):
    """(ours, `search: bisect`) Search each candidate's step (`d`: its direction by name); apply the one
    that leaves the best model (met first, then κ·retain − the concept's probability)."""
    found = []
    for c in candidates:
        origin = {n: params[n].detach().clone() for n in c.params}
        eta, m, tried = step_search(probe, c, params, d[c.name], m0, p)
        met = any(t["met"] and t["eta"] == eta for t in tried)
        set_step(c, params, origin, d[c.name], 0.0)
        key = (met, p.kappa * m.retain - m.concept_p) if eta > 0 else (False, -math.inf)
        found.append((key, c, origin, eta, m, tried))
    _, c, origin, eta, m, tried = max(found, key=lambda f: f[0])
    set_step(c, params, origin, d[c.name], eta)
    return c, eta, m, tried


def _first_promising(probe: Probe, candidates: list[Component], params: dict, d: dict[str, dict], m0: Measure,
                     p: SearchParams):
    """(ours, `search: predict`) The round's component: each candidate (`d`: its direction by name) is probed once at its
    opening step ‖θ_c‖/‖d_c‖/10, then searched from there in order of promise (`_efficiency`); the
    first whose search finds a step is applied."""
    start = probe.current
    opened = []
    for c in candidates:
        w, n = c.flat(params).norm().item(), c.flat(d[c.name]).norm().item()
        if n == 0 or not math.isfinite(n):
            continue
        origin, eta = {k: params[k].detach().clone() for k in c.params}, w / n / 10
        set_step(c, params, origin, d[c.name], eta)
        m = probe.trial(c)
        set_step(c, params, origin, d[c.name], 0.0)
        opened.append((_efficiency(start, m, m0, p), c, (eta, m)))
    for _, c, seed in sorted(opened, key=lambda o: o[0], reverse=True):
        eta, m, tried = step_search(probe, c, params, d[c.name], m0, p, seed)
        if eta > 0:
            return c, eta, m, tried
    return candidates[0], 0.0, start, []


def _efficiency(start: Measure, m: Measure, base: Measure, p: SearchParams) -> tuple[bool, float]:
    """How promising an opening step from `start` to `m` is: whether it already meets the target within
    the retain tolerance, then forget progress per retain lost (at least 1 % counted): FA's gap to the
    target where the probe gives margins, else the concept's probability. A step that lets a forgotten
    concept back ranks last."""
    if m.kept_fa > p.kept_limit(start.kept_fa) + 1e-9:
        return False, -math.inf
    g0, g1 = start.gap(p.goal), m.gap(p.goal)
    progress = g0 - g1 if g0 is not None and g1 is not None and math.isfinite(g0 - g1) else start.concept_p - m.concept_p
    met = m.fa <= p.goal and base.retain - m.retain <= p.retain_tolerance + 1e-9
    return met, progress / max(start.retain - m.retain, 0.01)
