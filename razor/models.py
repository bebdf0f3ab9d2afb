"""What every model folder passes, whatever its family: safetensors weights only,
finite weights, a dtype and a device torch can use."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch

from razor.config import DTYPES
from razor.errors import ModelError, NumericalError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def check_folder(folder: Path) -> None:
    """A local model folder must hold config.json and safetensors weights (pickled weights are refused)."""
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not a model folder; it needs config.json and model.safetensors")
    if not any(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
        hint = f" (found pickled {', '.join(pickled)}: refused)" if pickled else ""
        raise ModelError(f"{folder} has no .safetensors weights{hint}; convert the checkpoint to safetensors")


@contextlib.contextmanager
def loading(what: str, spec: str, layout: str = "(config.json, model.safetensors, tokenizer files)"):
    """Within the block, a library's load error (OSError, ValueError) becomes one line naming the model
    and the fix."""
    try:
        yield
    except ModelError:
        raise
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {what} {spec!r} ({str(e).splitlines()[0]}); pass a local folder {layout} "
                         "or a hub id that is in the local cache") from e


def torch_dtype(name: str):
    """fp32 / fp16 / bf16 → the torch dtype."""
    if name not in DTYPES:
        raise ModelError(f"dtype {name!r} is not one of {', '.join(DTYPES)}; fp16 and bf16 halve the memory of fp32")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N, and only a CUDA device torch can see."""
    if device != "cpu" and not (device == "cuda" or device.startswith("cuda:") and device[5:].isdigit()):
        raise ModelError(f"device {device!r} is not cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        index = int(device[5:] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ModelError(f"device {device!r} was asked for, but torch ({torch.__version__}, {build}) sees "
                             f"{torch.cuda.device_count()} CUDA devices; run with --device cpu, or install torch for your CUDA")


def check_finite(model) -> None:
    """Refuse weights holding NaN or Inf, naming the parameter."""
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise NumericalError(f"parameter {name} holds NaN or Inf values; the checkpoint is corrupt — "
                                 "re-export or re-train it")


def image_preprocess(folder: Path, size: int) -> dict:
    """Image size, mean and std: the folder's preprocessor_config.json, else OpenAI CLIP's."""
    preprocess = {"size": size, "mean": OPENAI_MEAN, "std": OPENAI_STD}
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        preprocess["mean"], preprocess["std"] = tuple(cfg.get("image_mean", OPENAI_MEAN)), tuple(cfg.get("image_std", OPENAI_STD))
    return preprocess


def save_pretrained(adapter, folder: Path) -> None:
    """A transformers model folder: config, safetensors weights, tokenizer and the source folder's
    preprocessor_config.json (what `load_clip` and `load_llava` read back)."""
    adapter.model.save_pretrained(folder, safe_serialization=True)
    adapter.tokenizer.save_pretrained(folder)
    pre = Path(adapter.source) / "preprocessor_config.json"
    if adapter.source and pre.is_file():
        shutil.copy2(pre, folder)
