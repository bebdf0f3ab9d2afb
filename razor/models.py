"""What every model folder passes, whatever its family: safetensors weights only, with headers
that parse and tensors that cover the model, finite weights, a dtype and a device torch can use."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

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
    check_weight_files(folder)


def check_weight_files(folder: Path) -> None:
    """Every .safetensors file in `folder` has a header that parses (read without loading a tensor)."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                             "re-export the weights with safetensors") from e


def from_pretrained(cls, source: str, **kwargs):
    """`cls.from_pretrained(source, **kwargs)`, refusing weights that do not cover the model: tensors the
    checkpoint lacks (the library would leave them at random initialisation) or holds for another model
    are named. Tied and optional weights, which the library itself fills or skips, pass."""
    with quiet_loggers("transformers", "diffusers"):  # their own missing-weights report: we raise ours instead
        model, info = cls.from_pretrained(source, output_loading_info=True, **kwargs)
    where = f"{source}/{kwargs['subfolder']}" if kwargs.get("subfolder") else source
    problems = []
    for kind, keys in (("lacks", info.get("missing_keys")), ("holds unknown", info.get("unexpected_keys")),
                       ("holds wrongly shaped", info.get("mismatched_keys"))):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in keys or ())
        keys = [k for k in keys if not k.endswith("position_ids")]  # a buffer older exports saved
        if keys:
            shown = ", ".join(keys[:4]) + (f", … ({len(keys)} in all)" if len(keys) > 4 else "")
            problems.append(f"{kind} tensors {shown}")
    if problems:
        raise ModelError(f"the weights of {where} do not match its config ({cls.__name__}): it {'; it '.join(problems)}; "
                         "the config and weights come from different models — re-export the folder")
    return model


@contextlib.contextmanager
def quiet_loggers(*names: str):
    """Within the block, these loggers report errors only."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def loading(what: str, spec: str, layout: str = "(config.json, model.safetensors, tokenizer files)"):
    """Within the block, a library's load error (OSError, ValueError) becomes one line naming the model
    and the fix."""
    try:
        yield
    except ModelError:
        raise
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelError(f"cannot load {what} {spec!r} ({(str(e) or type(e).__name__).splitlines()[0]}); pass a local "
                         f"folder {layout} or a hub id that is in the local cache") from e


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
        try:
            cfg = json.loads(pre.read_text())
            if not isinstance(cfg, dict):
                raise ValueError(f"a JSON {type(cfg).__name__}, not an object")
        except (OSError, ValueError) as e:
            raise ModelError(f"{pre} cannot be read ({str(e).splitlines()[0]}); fix it or delete it to use "
                             "OpenAI CLIP's image normalisation") from e
        mean, std = cfg.get("image_mean", OPENAI_MEAN), cfg.get("image_std", OPENAI_STD)
        if not all(isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) and math.isfinite(x)
                                                                    for x in v) for v in (mean, std)) or min(std) <= 0:
            raise ModelError(f"{pre} has image_mean {mean!r} and image_std {std!r}; each must be 3 finite numbers "
                             "(std > 0), one per RGB channel")
        preprocess["mean"], preprocess["std"] = tuple(mean), tuple(std)
    return preprocess


def save_pretrained(adapter, folder: Path) -> None:
    """A transformers model folder: config, safetensors weights, tokenizer and the source folder's
    preprocessor_config.json (what `load_clip` and `load_llava` read back)."""
    adapter.model.save_pretrained(folder, safe_serialization=True)
    adapter.tokenizer.save_pretrained(folder)
    pre = Path(adapter.source) / "preprocessor_config.json"
    if adapter.source and pre.is_file():
        shutil.copy2(pre, folder)
