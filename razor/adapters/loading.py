"""Which adapter a model needs (by its config's model_type), and the checks every model folder passes."""

from __future__ import annotations

from pathlib import Path

from razor.errors import ModelError

DEMO_MODELS = ("demo", "demo-vlm", "demo-sd")  # the shipped demo CLIP, VLM and diffusion model (the demo world)
DTYPES = ("fp32", "fp16", "bf16")  # the weights' precision a model loads in


def check_folder(folder: Path) -> None:
    """A local model folder must hold config.json and safetensors weights (pickled weights are refused)."""
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not a model folder; it needs config.json and model.safetensors")
    if not any(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
        hint = f" (found pickled {', '.join(pickled)}: refused)" if pickled else ""
        raise ModelError(f"{folder} has no .safetensors weights{hint}; convert the checkpoint to safetensors")


def model_type(spec: str) -> str:
    """The `model_type` of a local folder's or a (cached) hub id's config; "sd" for a diffusers
    Stable Diffusion layout (model_index.json, no top-level config.json)."""
    from transformers import AutoConfig

    if (Path(spec) / "model_index.json").is_file() or (not Path(spec).exists() and _hub_pipeline(spec)):
        return "sd"
    if Path(spec).exists():
        check_folder(Path(spec))
    try:
        return AutoConfig.from_pretrained(spec).model_type
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the config of model {spec!r} ({str(e).splitlines()[0]}); pass a local folder "
                         "(config.json, model.safetensors, tokenizer files) or a hub id that is in the local cache") from e


def _hub_pipeline(spec: str) -> bool:
    """Whether a (cached) hub id is a diffusers pipeline: it has model_index.json."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(spec, "model_index.json"), str)
    except ValueError:  # not a valid repo id (a mistyped path): the config read below names the problem
        return False


def torch_dtype(name: str):
    """fp32 / fp16 / bf16 → the torch dtype."""
    import torch

    if name not in DTYPES:
        raise ModelError(f"dtype {name!r} is not one of {', '.join(DTYPES)}; fp16 and bf16 halve the memory of fp32")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N, and only a CUDA device torch can see."""
    import torch

    if device != "cpu" and not (device == "cuda" or device.startswith("cuda:") and device[5:].isdigit()):
        raise ModelError(f"device {device!r} is not cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        index = int(device[5:] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ModelError(f"device {device!r} was asked for, but torch ({torch.__version__}, {build}) sees "
                             f"{torch.cuda.device_count()} CUDA devices; run with --device cpu, or install torch for your CUDA")


def load_model(spec: str, dtype: str = "fp32", device: str = "cpu"):
    """`demo`, `demo-vlm`, `demo-sd`, a local folder or a hub id → its adapter (CLIP, LLaVA-style VLM
    or Stable Diffusion), its weights in `dtype` (fp32 / fp16 / bf16) on `device` (cpu, cuda, cuda:N)."""
    from razor.adapters.clip import DEMO_MODEL, load_clip
    from razor.adapters.llava import load_llava
    from razor.demo.sd import DEMO_SD
    from razor.demo.vlm import DEMO_VLM

    check_device(device)
    dtype = torch_dtype(dtype)
    source = {"demo": str(DEMO_MODEL), "demo-vlm": str(DEMO_VLM), "demo-sd": str(DEMO_SD)}.get(spec, spec)
    kind = model_type(source)
    if kind == "llava":
        return load_llava(source, dtype, device)
    if kind == "clip":
        return load_clip(source, dtype, device)
    if kind == "sd":
        from razor.adapters.sd import load_sd

        return load_sd(source, dtype, device)
    raise ModelError(f"{spec!r} is a {kind!r} model; RAZOR edits CLIP (model_type clip), LLaVA-style VLMs (llava) "
                     "and Stable Diffusion pipelines (model_index.json)")
