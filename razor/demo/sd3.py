"""The demo SD3-style model: a tiny MMDiT in the Stable Diffusion 3 folder layout, trained by flow
matching on the demo world's objects × styles (`razor demo train-sd3`).

    text_encoder/, text_encoder_2/   the demo CLIP's text tower with its projection, twice (SD3 reads two
                                     CLIP encoders; the demo world has one); frozen while training
    tokenizer/, tokenizer_2/         the demo CLIP's tokenizer
    transformer/                     an `SD3Transformer2DModel` on the 3×32×32 image (pixel space, no VAE,
                                     4×4 patches: 64 image tokens; 16 rows of zeros in the absent T5's place)
    scheduler/                       flow-matching Euler (shift 1: a 32-pixel image needs no shift to high noise)
    classifier/, judge/              the demo SD model's: they label demo-world images, whoever drew them

Training is the demo SD model's recipe with the flow-matching loss: captions are the world's own, half
of them replaced by the evaluation prompt "a {style} {object}", 10 % dropped to "" for classifier-free
guidance; σ drawn logit-normal (SD3's), the velocity ε − x0 regressed; the weights kept as an EMA.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import torch
import torch.nn.functional as nnf

from razor.demo import DEMO_CLIP, DEMO_SD
from razor.demo.sd import evaluate_sd, fit, training_set
from razor.families.sd.adapter import save_sd
from razor.families.sd.classifier import NetClassifier
from razor.families.sd3.adapter import Sd3Adapter
from razor.io import atomic_dir, sha256_file

MAX_SEQUENCE_LENGTH = 16  # T5's rows of zeros: as many as the CLIP tokens


def transformer_config(text_width: int, pooled: int) -> dict:
    """2.4 M parameters on the 3×32×32 image: 4×4 patches, 4 blocks of 4 heads × 32."""
    return dict(sample_size=32, patch_size=4, in_channels=3, out_channels=3, num_layers=4, attention_head_dim=32,
                num_attention_heads=4, joint_attention_dim=text_width, caption_projection_dim=128,
                pooled_projection_dim=pooled, pos_embed_max_size=8)


def text_encoder():
    """The demo CLIP's text tower and projection as a `CLIPTextModelWithProjection` (SD3's encoder class)."""
    from transformers import CLIPModel, CLIPTextModelWithProjection

    clip = CLIPModel.from_pretrained(DEMO_CLIP, use_safetensors=True)
    text = CLIPTextModelWithProjection(clip.config.text_config.__class__(**{**clip.config.text_config.to_dict(),
                                                                             "projection_dim": clip.config.projection_dim}))
    text.text_model.load_state_dict(clip.text_model.state_dict())
    text.text_projection.load_state_dict(clip.text_projection.state_dict())
    return text.eval().requires_grad_(False)


def train_sd3(out: str | Path, manifest_path: str | Path | None = None, seed: int = 0, steps: int = 8000,
              batch_size: int = 32, lr: float = 1e-3, minutes: float = 35.0, canonical: float = 0.5, ema: float = 0.999,
              transformer: dict | None = None, progress: bool = True) -> dict:
    """Train the demo SD3-style model on the train split's shape images and write it to `out` (atomically)
    with `training.json` (how often its generations are labelled right, by the classifier and the judge);
    stops early after `minutes` of training."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    manifest, _, images, captions, named = training_set(manifest_path)
    text = text_encoder()
    tokenizer = CLIPTokenizer.from_pretrained(DEMO_CLIP)
    width, pooled = 2 * text.config.hidden_size, 2 * text.config.projection_dim
    model = SD3Transformer2DModel(**(transformer or transformer_config(width, pooled)))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    adapter = Sd3Adapter(text, text_encoder(), tokenizer, tokenizer, model, scheduler, None, "demo-sd3",
                         max_sequence_length=MAX_SEQUENCE_LENGTH)

    def loss(x0: torch.Tensor, states: torch.Tensor, gen: torch.Generator, step: int) -> torch.Tensor:
        x_t, t, v = adapter.noised(x0, [zlib.crc32(f"{seed}/{step}/{i}".encode()) for i in range(len(x0))])
        return nnf.mse_loss(adapter.predict(x_t, t, states), v)

    done, seconds = fit(adapter, images, captions, named, loss, seed, steps, batch_size, lr, minutes, canonical, ema,
                        progress, "train demo SD3")
    judged = {part: evaluate_sd(adapter, NetClassifier.load(DEMO_SD / part)) for part in ("classifier", "judge")}
    info = dict(seed=seed, steps=done, batch_size=batch_size, lr=lr, canonical=canonical, ema=ema,
                seconds=round(seconds, 1), manifest_sha256=sha256_file(manifest.path),
                generated_accuracy=judged["classifier"], judge=dict(generated_accuracy=judged["judge"]),
                clip_sha256=sha256_file(DEMO_CLIP / "model.safetensors"),
                classifiers=f"the demo SD model's classifier/ and judge/ ({DEMO_SD.name}/)")
    with atomic_dir(out, "training.json") as tmp:
        save_sd(adapter, tmp)
        for part in ("classifier", "judge"):
            shutil.copytree(DEMO_SD / part, tmp / part)
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
    return info
