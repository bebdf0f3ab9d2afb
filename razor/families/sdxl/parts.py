"""What the Stable Diffusion XL family gives the shared machinery: its adapter, and the SD family's
parts for everything that does not depend on how text becomes the denoiser's condition."""

from razor.families.sd.adapter import save_sd as save
from razor.families.sd.attacks import ATTACKS as attacks
from razor.families.sd.attacks import concept_share as forget_share
from razor.families.sd.metrics import evaluate, figure, forget_and_utility, keys
from razor.families.sd.parts import judge
from razor.families.sd.probe import SdProbe as probe
from razor.families.sd.serve import serve, serving
from razor.families.sd.task import SdTask as task
from razor.families.sdxl.adapter import load_sdxl as load
from razor.output_cache import OutputCache as cache

__all__ = ["load", "save", "task", "probe", "cache", "evaluate", "keys", "forget_and_utility", "forget_share", "figure", "judge", "attacks", "serving", "serve"]
