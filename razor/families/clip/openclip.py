"""OpenCLIP checkpoints read natively (the `open_clip` package needs torchvision): a folder or hub id with
`open_clip_config.json` and `open_clip_model.safetensors`, the layout of OpenCLIP's hub checkpoints, mapped
onto the CLIP family's `CLIPModel` the way transformers' own conversion maps it: each block's fused attention
`in_proj` split into q / k / v rows, `out_proj`, MLP `c_fc` / `c_proj`, `ln_1` / `ln_2`, the embeddings, the
final norms and the (transposed) projections. Every CLIPModel weight is a view of the checkpoint tensor it
lives in, so an edit of the model is an edit of the checkpoint's tensors, and a delta names those tensors
(razor.delta, layout "open_clip"). The text is pooled at the end-of-text token, as OpenCLIP's argmax over
the token ids does for a tokenizer whose end-of-text id is its largest (checked)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from razor.components import Slice
from razor.errors import ModelError
from razor.model_config import config_files
from razor.models import OPENAI_MEAN, OPENAI_STD, check_weight_files, loading

NAME = "open_clip"
CONFIG, WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
OPENAI_TOKENIZER = "openai/clip-vit-base-patch32"  # OpenCLIP's own BPE, for a checkpoint that names no tokenizer
# what each part of the config may hold; options the CLIP family cannot express only at OpenCLIP's defaults
KNOWN = {"model_cfg": {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "cast_dtype"},
         "vision_cfg": {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "patch_dropout"},
         "text_cfg": {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "hf_tokenizer_name",
                      "tokenizer_kwargs", "pad_id"}}
DEFAULTS = {"model_cfg": {"custom_text": False, "init_logit_bias": None},
            "vision_cfg": {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
                           "pos_embed_type": "learnable", "final_ln_after_pool": False, "pool_type": "tok",
                           "output_tokens": False, "timm_model_name": None},
            "text_cfg": {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
                         "pool_type": "argmax", "proj_bias": False, "proj_type": "linear", "output_tokens": False,
                         "hf_model_name": None}}
BLOCK = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))
TOWERS = (("text_model.encoder.layers", "transformer.resblocks"),
          ("vision_model.encoder.layers", "visual.transformer.resblocks"))
SINGLE = {"logit_scale": "logit_scale", "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
          "text_model.embeddings.position_embedding.weight": "positional_embedding",
          "vision_model.embeddings.class_embedding": "visual.class_embedding",
          "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
          "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
          **{f"{a}.{p}": f"{b}.{p}" for a, b in (("text_model.final_layer_norm", "ln_final"),
                                                 ("vision_model.pre_layrnorm", "visual.ln_pre"),
                                                 ("vision_model.post_layernorm", "visual.ln_post")) for p in ("weight", "bias")}}


@dataclass(frozen=True)
class Place:
    """Where a CLIPModel parameter lives in the checkpoint: tensor `key`, rows [part·width, (part+1)·width)
    of it (q, k, v of a fused in_proj) or all of it, transposed (the projections) or not."""

    key: str
    part: int | None = None
    width: int = 0
    transposed: bool = False


def places(config: CLIPConfig) -> dict[str, Place]:
    """Every CLIPModel parameter's place in the OpenCLIP checkpoint of a model of this config."""
    out = {hf: Place(oc) for hf, oc in SINGLE.items()}
    out["text_projection.weight"] = Place("text_projection", transposed=True)
    out["visual_projection.weight"] = Place("visual.proj", transposed=True)
    for (hf, oc), tower in zip(TOWERS, (config.text_config, config.vision_config)):
        for i in range(tower.num_hidden_layers):
            for p in ("weight", "bias"):
                for j, x in enumerate("qkv"):
                    out[f"{hf}.{i}.self_attn.{x}_proj.{p}"] = Place(f"{oc}.{i}.attn.in_proj_{p}", j, tower.hidden_size)
                out |= {f"{hf}.{i}.{a}.{p}": Place(f"{oc}.{i}.{b}.{p}") for a, b in BLOCK}
    return out


class Layout:
    """An OpenCLIP checkpoint's tensors (`tensors`, by its key names) and where each CLIPModel parameter
    lives in them: what a delta of an OpenCLIP model is written in (razor.delta)."""

    name = NAME

    def __init__(self, config: CLIPConfig, tensors: dict[str, torch.Tensor] | None = None):
        self.places = places(config)
        self.keys = list(dict.fromkeys(p.key for p in self.places.values()))
        self.tensors = tensors or {}
        self._held = {k: [n for n, p in self.places.items() if p.key == k] for k in self.keys}

    def params_in(self, key: str) -> list[str]:
        """The CLIPModel parameters that live in checkpoint tensor `key` (q, k, v in order)."""
        return self._held[key]

    def view(self, param: str) -> torch.Tensor:
        """CLIPModel parameter `param` as a view of the checkpoint tensor it lives in."""
        p = self.places[param]
        t = self.tensors[p.key]
        if p.part is not None:
            t = t[p.part * p.width:(p.part + 1) * p.width]
        return t.T if p.transposed else t

    def assemble(self, key: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Checkpoint tensor `key` made from CLIPModel tensors `params` (by parameter name)."""
        held = [params[n].detach() for n in self._held[key]]
        t = torch.cat(held) if len(held) > 1 else held[0]
        return (t.T if self.places[self._held[key][0]].transposed else t).contiguous()

    def slice(self, s: Slice) -> Slice:
        """A slice of a CLIPModel parameter as the same slice of its checkpoint tensor."""
        p = self.places[s.param]
        if p.transposed:
            return Slice(p.key, 1 - s.dim, s.start, s.stop)
        if p.part is None:
            return Slice(p.key, s.dim, s.start, s.stop)
        start, stop = (0, p.width) if s.start is None else (s.start, s.stop)
        return Slice(p.key, 0, p.part * p.width + start, p.part * p.width + stop)


def is_openclip(source: str) -> bool:
    """Whether a folder (or cached hub id) holds an OpenCLIP checkpoint and no transformers config."""
    try:
        files = config_files(source)
    except ModelError:  # nothing readable: the transformers loader says what is missing
        return False
    return CONFIG in files and "config.json" not in files


def read(source: str) -> tuple[dict, Path]:
    """The checked config and the weights file of an OpenCLIP folder or hub id (downloaded if not cached)."""
    folder = Path(source)
    if folder.exists():
        if not (folder / WEIGHTS).is_file():
            pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
            hint = f" (found pickled {', '.join(pickled)}: refused)" if pickled else ""
            raise ModelError(f"{folder} has {CONFIG} but no {WEIGHTS}{hint}; convert the checkpoint to safetensors")
        check_weight_files(folder)
        config, weights = folder / CONFIG, folder / WEIGHTS
    else:
        config, weights = Path(hf_hub_download(source, CONFIG)), Path(hf_hub_download(source, WEIGHTS))
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{config} cannot be read ({e}); re-download the checkpoint") from e
    check(cfg, config)
    return cfg, weights


def check(cfg: dict, where) -> None:
    """Refuse, by name, what OpenCLIP checkpoints may hold that the CLIP family cannot express."""
    model = cfg.get("model_cfg")
    if not isinstance(model, dict) or not isinstance(model.get("vision_cfg"), dict) or not isinstance(model.get("text_cfg"), dict):
        raise ModelError(f"{where} has no model_cfg with vision_cfg and text_cfg; it is not an OpenCLIP checkpoint config")
    for part, values in (("model_cfg", model), ("vision_cfg", model["vision_cfg"]), ("text_cfg", model["text_cfg"])):
        odd = [f"{k}={v!r}" for k, v in values.items()
               if k not in KNOWN[part] and (k not in DEFAULTS[part] or v != DEFAULTS[part][k])]
        if odd:
            raise ModelError(f"{where}: {part} sets {', '.join(odd)}; RAZOR reads OpenCLIP's standard ViT CLIP "
                             "(transformer towers, learned positions, class-token / argmax pooling, no layer scale), "
                             "so this checkpoint cannot be edited here")
    if not isinstance(model["vision_cfg"].get("layers", 12), int):
        raise ModelError(f"{where}: vision_cfg.layers is {model['vision_cfg']['layers']!r}, a ResNet image tower; "
                         "RAZOR edits ViT towers (an int number of layers)")


def clip_config(cfg: dict, tokenizer) -> CLIPConfig:
    """The CLIPConfig of an OpenCLIP config (OpenCLIP's defaults where it leaves a value out)."""
    m = cfg["model_cfg"]
    v, t = m["vision_cfg"], m["text_cfg"]
    act = "quick_gelu" if m.get("quick_gelu") else "gelu"  # OpenCLIP's nn.GELU is the exact one, as transformers' gelu
    vw, tw = v.get("width", 768), t.get("width", 512)
    size = v.get("image_size", 224)
    patch = v.get("patch_size", 16)
    vision = dict(hidden_size=vw, intermediate_size=int(vw * v.get("mlp_ratio", 4.0)), num_hidden_layers=v.get("layers", 12),
                  num_attention_heads=vw // v.get("head_width", 64), image_size=size if isinstance(size, int) else size[0],
                  patch_size=patch if isinstance(patch, int) else patch[0], hidden_act=act)
    text = dict(vocab_size=t.get("vocab_size", 49408), hidden_size=tw, intermediate_size=int(tw * t.get("mlp_ratio", 4.0)),
                num_hidden_layers=t.get("layers", 12), num_attention_heads=t.get("heads", 8),
                max_position_embeddings=t.get("context_length", 77), hidden_act=act, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=m["embed_dim"])


def tokenizer_for(source: str, cfg: dict):
    """The checkpoint's own tokenizer files, else the tokenizer its text_cfg names, else OpenCLIP's BPE
    (OpenAI CLIP's); its end-of-text id must be its largest (OpenCLIP pools the text at the argmax id)."""
    folder = Path(source)
    own = folder.exists() and any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json"))
    name = source if own else cfg["model_cfg"]["text_cfg"].get("hf_tokenizer_name") or OPENAI_TOKENIZER
    with loading("OpenCLIP tokenizer", name):
        tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.eos_token_id != len(tokenizer) - 1:
        raise ModelError(f"the tokenizer of {source} ({name}) has end-of-text id {tokenizer.eos_token_id}, not its largest "
                         f"({len(tokenizer) - 1}); OpenCLIP pools the text at the largest id, so this pairing is not one "
                         "OpenCLIP runs")
    return tokenizer


def load_openclip(source: str, dtype: torch.dtype, device: str):
    """(CLIPModel whose weights are views of the checkpoint's tensors, tokenizer, preprocessing, Layout)."""
    cfg, weights = read(source)
    tokenizer = tokenizer_for(source, cfg)
    config = clip_config(cfg, tokenizer)
    with loading("OpenCLIP model", source, "in the OpenCLIP layout"):
        tensors = load_file(str(weights))
    layout = Layout(config)
    extra, missing = sorted(set(tensors) - set(layout.keys)), sorted(set(layout.keys) - set(tensors))
    if extra or missing:
        raise ModelError(f"{weights} does not match its {CONFIG}: " + "; ".join(
            f"{what} {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}" for what, keys in
            (("unexpected tensors", extra), ("missing tensors", missing)) if keys) + "; it is not a standard OpenCLIP ViT checkpoint")
    model = CLIPModel(config).to(device=device, dtype=dtype).eval()
    layout.tensors = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}
    with torch.no_grad():
        for name, param in model.named_parameters():
            view = layout.view(name)
            if view.shape != param.shape:
                raise ModelError(f"{weights}: {layout.places[name].key} gives {name} the shape {tuple(view.shape)}, but "
                                 f"{CONFIG} makes it {tuple(param.shape)}; the config does not describe these weights")
            param.data = view
    pre = cfg.get("preprocess_cfg") or {}
    preprocess = {"size": config.vision_config.image_size, "mean": tuple(pre.get("mean", OPENAI_MEAN)),
                  "std": tuple(pre.get("std", OPENAI_STD))}
    return model, tokenizer, preprocess, layout


def openclip_config(config: CLIPConfig, preprocess: dict) -> dict:
    """The OpenCLIP config of a CLIPConfig (refused where OpenCLIP has no such activation)."""
    v, t = config.vision_config, config.text_config
    if v.hidden_act != t.hidden_act or v.hidden_act not in ("quick_gelu", "gelu"):
        raise ModelError(f"activations {v.hidden_act!r} / {t.hidden_act!r} have no OpenCLIP form (quick_gelu or gelu in both towers)")
    return {"model_cfg": {"embed_dim": config.projection_dim, "quick_gelu": v.hidden_act == "quick_gelu",
                          "vision_cfg": {"image_size": v.image_size, "layers": v.num_hidden_layers, "width": v.hidden_size,
                                         "patch_size": v.patch_size, "head_width": v.hidden_size // v.num_attention_heads,
                                         "mlp_ratio": v.intermediate_size / v.hidden_size},
                          "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size,
                                       "width": t.hidden_size, "heads": t.num_attention_heads, "layers": t.num_hidden_layers,
                                       "mlp_ratio": t.intermediate_size / t.hidden_size}},
            "preprocess_cfg": {"mean": list(preprocess["mean"]), "std": list(preprocess["std"])}}


def write_openclip(adapter, folder: Path) -> None:
    """The adapter's weights as they are now, as an OpenCLIP checkpoint folder (config, safetensors weights
    in OpenCLIP's key names, tokenizer files) that `load_openclip` reads back bit for bit."""
    layout = adapter.layout or Layout(adapter.model.config)
    params = adapter.parameters()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(openclip_config(adapter.model.config, adapter.preprocess), indent=2))
    save_file({k: layout.assemble(k, params) for k in layout.keys}, str(folder / WEIGHTS))
    adapter.tokenizer.save_pretrained(folder)
