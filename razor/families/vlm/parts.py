"""What the VLM family gives the shared machinery (razor.family.Family's parts)."""

from razor.families.vlm.adapter import load_llava as load
from razor.families.vlm.attacks import ATTACKS as attacks
from razor.families.vlm.metrics import evaluate, forget_and_utility, keys
from razor.families.vlm.metrics import forget_accuracy as forget_share
from razor.families.vlm.probe import VlmProbe as probe
from razor.families.vlm.task import VlmTask as task
from razor.families.vlm.serve import serve, serving
from razor.models import save_pretrained as save
from razor.output_cache import OutputCache as cache

__all__ = ["load", "save", "task", "probe", "cache", "evaluate", "keys", "forget_and_utility", "forget_share", "attacks", "serving", "serve"]
