"""What the CLIP family gives the shared machinery (razor.family.Family's parts)."""

from razor.families.clip.adapter import load_clip as load
from razor.families.clip.adapter import save_clip as save
from razor.families.clip.attacks import ATTACKS as attacks
from razor.families.clip.attacks import forget_fa1 as forget_share
from razor.families.clip.cache import FrozenCache as cache
from razor.families.clip.metrics import evaluate, forget_and_utility, keys
from razor.families.clip.probe import ClipProbe as probe
from razor.families.clip.task import ClipTask as task
from razor.families.clip.serve import serve, serving

__all__ = ["load", "save", "task", "probe", "cache", "evaluate", "keys", "forget_and_utility", "forget_share", "attacks", "serving", "serve"]
