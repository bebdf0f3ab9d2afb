"""Typed, validated parameters of RAZOR and the baselines (validated once, then passed as values)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DTYPES = ("fp32", "fp16", "bf16")  # the weights' precision a model loads in
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# FA@1 on forget-val that counts as forgotten: a share, or "oracle" (razor/target.py)
Target = Annotated[float, Field(ge=0, le=1)] | Literal["oracle"]
Steps = tuple[Annotated[int, Field(ge=1)], ...]  # budgets measured after each of these steps


class TargetParams(Params):
    """The forget target every forgetting method stops at, fixed or the retrain oracle's (razor/target.py)."""

    forget_target: Target = Field(0.05, description="FA@1 on forget-val that counts as forgotten; oracle: the "
                                  "retrain oracle's FA@1 there plus oracle_margin")
    oracle_fa: float | None = Field(None, ge=0, le=1, description="(ours) with forget_target oracle: the oracle's "
                                    "FA@1 on forget-val as recorded for the request (default: measured on the "
                                    "cached retrain oracle)")
    oracle_margin: float = Field(0.03, ge=0, le=1, description="(ours) how far above the oracle's FA@1 still counts as forgotten")


class SearchParams(TargetParams):
    """The per-component step search (METHOD.md §4) and its targets on the validation split."""

    retain_tolerance: float = Field(0.06, ge=0, le=1, description="allowed share of retain-val predictions that change from θ0's")
    budget_share: float = Field(0.5, gt=0, le=1, description="(ours) share of the remaining tolerance one partial edit may spend")
    kappa: float = Field(1.0, ge=0, description="(ours) trade-off: forget gain − κ·retain loss")
    probes: int = Field(10, ge=1, le=40, description="step evaluations per component")
    robust_bits: int | None = Field(4, ge=2, le=8, description="(ours) a step meets the target only if it also does after this quantisation")
    keep_forgotten: bool = Field(True, description="(ours) refuse a step that brings a concept the model already forgot "
                                 "above forget_target on its val items")
    search: Literal["bisect", "predict"] = Field(
        "predict", description="(ours) how the step search finds η. bisect: double or halve from SLUG's start, then "
        "bisect to within 10 %, every candidate of a round searched and the best kept. predict: each step predicted "
        "from the forget items' margins (secant / regula falsi on FA's gap to the target), the quantised check on the "
        "chosen step only, candidates probed once and searched in order of promise until one steps, aiming at half "
        "the target on the val items (razor/editing.py)")

    @property
    def goal(self) -> float:
        """FA@1 on forget-val the search aims at: the target (bisect), or half of it (predict, whose steps land
        at the goal's edge: held-out items need the room; measured on the 26 demo CLIP labels, README)."""
        return self.forget_target / 2 if self.search == "predict" else self.forget_target

    def kept_limit(self, start: float) -> float:
        """The FA@1 on its val items that a step may leave a concept the model already forgot at: forget_target
        (not `goal`, whose halving keeps room for this request's own held-out items), or where it already
        was; unbounded without keep_forgotten."""
        return max(self.forget_target, start) if self.keep_forgotten else math.inf


class ObjectiveParams(Params):
    """The forget objective on a model that already forgot other concepts (governance chains)."""

    kept_weight: float = Field(0.5, ge=0, description="(ours) weight of the already-forgotten concepts' forget "
                               "objective added to this one's, so the edit keeps them forgotten")
    forget_objective: str = Field(
        "default", description="(ours) a family's forget objective F where it offers several (a diffusion model: "
        "the noise-prediction gap toward the anchor prompt, noise, its default, or the text-embedding gap, embedding; "
        "CLIP: the label prompt, its default, or wordings: averaged over the data's forget wordings)")


class RankParams(ObjectiveParams):
    """The contribution ranking (METHOD.md §2–3): which components, how they are scored and chosen."""

    granularity: Literal["layer", "head", "both"] = "both"
    towers: tuple[str, ...] | None = Field(
        None, min_length=1, description="which towers' components are candidates (default: the model family's "
        "default towers; CLIP: vision, text; a VLM: vision, projector; a diffusion model: text, xattn)")
    alpha: float = Field(1.0, ge=0, le=1)
    alignment: Literal["signed", "abs"] = "signed"
    normalize: Literal["none", "tower"] = "none"
    select: Literal["topk", "threshold", "pareto"] = "topk"
    k: int = Field(1, ge=1)
    tau: float | None = None

    @model_validator(mode="after")
    def _tau_for_threshold(self):
        if self.select == "threshold" and self.tau is None:
            raise ValueError("select: threshold needs tau (the score cut-off), e.g. --param tau=0.02")
        return self


class EditParams(SearchParams, ObjectiveParams):
    """The iterative edit (METHOD.md §4–5)."""

    rho: float = Field(1.0, gt=0, le=1)
    lambda_f: float = Field(1.0, ge=0)
    lambda_m: float = Field(1.0, ge=0)
    mode: Literal["zero_step", "one_step"] = "one_step"
    max_rounds: int = Field(6, ge=1, le=6)
    candidates: int = Field(4, ge=1, description="(ours) top candidates evaluated per expansion round")
    precondition: Literal["none", "retain"] = Field(
        "none", description="(ours) retain: shape each component's direction by the second moment C of its "
        "Linear inputs on D_r, d·(C + damping·tr(C)/k·I)⁻¹, so the step moves retain outputs least (razor/curvature.py)")
    damping: float = Field(0.01, gt=0, description="(ours) the retain curvature's ridge, relative to C's mean eigenvalue")


class RazorParams(RankParams, EditParams):
    """Both halves of RAZOR, as `razor unlearn` takes them."""

    def part(self, cls: type[Params]) -> Params:
        return cls(**{k: v for k, v in self.model_dump().items() if k in cls.model_fields})


class SlugParams(SearchParams):
    towers: tuple[str, ...] | None = Field(None, min_length=1, description="as RAZOR's (default: the family's)")
    robust_bits: int | None = None  # SLUG's search checks the unquantised model only


class TrainParams(TargetParams):
    """Gradient-based baselines: ga, graddiff, ft, salun."""

    lr: float = Field(3e-5, gt=0)
    max_steps: int = Field(60, ge=1)
    eval_every: int = Field(3, ge=1)
    retain_weight: float = Field(1.0, ge=0)
    saliency: float = Field(0.5, gt=0, le=1, description="salun: share of weights kept by the saliency mask")


class EsdParams(TargetParams):
    """ESD-x on a diffusion model: Adam on the UNet's cross-attention toward negative guidance."""

    lr: float = Field(1e-4, gt=0)
    eta: float = Field(1.0, ge=0, description="negative guidance scale")
    batch_size: int = Field(8, ge=1, description="forget items per step")
    max_steps: int = Field(200, ge=1)
    eval_every: int = Field(10, ge=1)
    seed: int = 0


class UceParams(Params):
    """UCE's closed-form cross-attention edit."""

    lam: float = Field(0.5, gt=0, description="λ: pull toward the original weights")
    erase_scale: float = Field(1.0, ge=0)
    preserve_scale: float = Field(0.1, ge=0)


class RetrainParams(Params):
    steps: int = Field(1500, ge=1)
    seed: int = 0


class CurateParams(Params):
    """The pipeline's curate stage: set sizes and the batching every later stage follows."""

    forget_size: int = Field(256, ge=1)
    retain_size: int = Field(512, ge=1)
    eval_size: int = Field(600, ge=1, description="retain items per held-out split")
    batch_size: int = Field(128, ge=1)
    kept_size: int = Field(128, ge=1, description="train items per already-forgotten concept (their forget objective)")
    kept_total: int = Field(512, ge=1, description="at most this many of them in all: on a long chain each concept gets "
                                                  "kept_total / their number (at least 16), so an edit's cost stops growing")
    dtype: Literal[DTYPES] = Field("fp32", description="the weights' precision every later stage loads")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")
    gradient_checkpointing: bool = Field(False, description="recompute block activations in the backward pass")


class EvaluateParams(Params):
    bits: tuple[int, ...] = Field((8, 4), min_length=1, description="weight quantisations the metrics are re-checked under")


class AttackParams(Params):
    """The attacks' budgets (razor.attack, `--attack-param`): what an attacker who holds the edited
    weights may spend to bring the concept back."""

    relearn_steps: Steps = Field((10, 50), min_length=1, description="relearn_retain: Adam steps on "
                                           "retain data only, the concept re-measured after each of these")
    shots: int = Field(4, ge=1, description="relearn_kshot: forget images the attacker holds (with their captions)")
    kshot_steps: int = Field(20, ge=1, description="relearn_kshot: Adam steps on them and retain data")
    lr: float = Field(2e-4, gt=0, description="the attacker's Adam learning rate (the demo recipe's is 2e-3)")
    batch_size: int = Field(32, ge=1, description="retain items per relearning step")
    probe_shots: int = Field(16, ge=2, description="linear_probe: labelled training items per label")
    mia_items: int = Field(64, ge=8, description="mia's positive control: new items memorised (and as many unseen)")
    mia_steps: int = Field(100, ge=1, description="mia's positive control: Adam steps on the memorised items")
    mia_lr: float = Field(3e-3, gt=0, description="mia's positive control: its learning rate")
    prompt_tokens: int = Field(5, ge=1, description="adversarial_prompt: learned word embeddings put before each "
                               "of the concept's prompts (UnlearnDiffAtk's 5)")
    word_steps: Steps = Field((25, 100), min_length=1, description="adversarial_prompt, concept_inversion: "
                                        "Adam steps on the learned words, the concept judged after each of these")
    word_lr: float = Field(1e-2, gt=0, description="adversarial_prompt, concept_inversion: the words' learning rate")
    seed: int = Field(0, ge=0, le=MAX_SEED)


class AttackStageParams(AttackParams):
    """params.yaml `attack`: the attacks the attack stage runs (all, none or names) and their budgets."""

    attacks: str | tuple[str, ...] = Field("all", description="all (every attack the model's family lists), none, "
                                           "or attack names (a list, or joined by commas)")


Ratio = Annotated[float, Field(ge=0, le=1)]


class FlowParams(Params):
    """How the Prefect flows run the stages (params.yaml `flow`; no stage reads it, so none reruns for it)."""

    stage_timeout: float = Field(7200, gt=0, description="seconds one stage may run; then it is stopped, its output "
                                                          "left unwritten, and the flow fails naming it")
    lock_timeout: float = Field(3600, ge=0, description="seconds a flow waits for a workspace lock; then it fails "
                                                        "naming the holder ($RAZOR_LOCK_TIMEOUT overrides)")


class GateParams(Params):
    """The regression gate before promotion (governance): every request on the chain still forgotten,
    utility within tolerance of the root model's."""

    forget_max: float = Field(0.10, ge=0, le=1, description="FA@1 on each request's held-out forget items")
    utility_tolerance: float = Field(0.08, ge=0, le=1, description="allowed utility drop from the root model")
    attack_max: dict[str, Ratio] = Field({}, description="attack name → the largest ASR (the attack stage's, on the "
                                         "new version) allowed")
    attack_margin: dict[str, Ratio] = Field({}, description="attack name → how far the ASR may lie above the retrain "
                                            "oracle's under the same attack")
    approval: Literal["none", "required"] = Field("none", description="required: after the gate passes, the intake "
                                                  "waits for an approver's answer before promoting (flows/approval.py)")
    approval_timeout: int = Field(86400, ge=1, description="seconds to wait for the answer; none in time: not promoted")
