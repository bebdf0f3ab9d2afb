"""What the Stable Diffusion family gives the shared machinery (razor.family.Family's parts)."""

from razor.families.sd.adapter import load_sd as load
from razor.families.sd.attacks import ATTACKS as attacks
from razor.families.sd.attacks import concept_share as forget_share
from razor.families.sd.adapter import save_sd as save
from razor.families.sd.metrics import evaluate, figure, forget_and_utility, keys
from razor.families.sd.probe import SdProbe as probe
from razor.families.sd.task import SdTask as task
from razor.families.sd.serve import serve, serving
from razor.output_cache import OutputCache as cache


def judge(t) -> str:
    """Who labels the final metrics' images: the model folder's judge/, or the named fallback."""
    return t.judge.judge


__all__ = ["load", "save", "task", "probe", "cache", "evaluate", "keys", "forget_and_utility", "forget_share", "figure", "judge", "attacks", "serving", "serve"]
