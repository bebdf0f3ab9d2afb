"""The demo diffusion model: a tiny text-to-image model in the Stable Diffusion folder layout,
trained on the demo world's objects × styles (`razor demo train-sd`).

    text_encoder/  the demo CLIP's text tower (frozen while training)
    tokenizer/     the demo CLIP's tokenizer
    unet/          a UNet2DConditionModel on pixel_unshuffle(image, 2) = 12×16×16 (pixel space, no VAE)
    scheduler/     DDPM, 1000 steps, squaredcos_cap_v2, ε-prediction (sampled with DDIM)

Captions are the world's own ("a dotted star", "a star drawn in dotted style", ...); 10% are
dropped to "" for classifier-free guidance. The classifier that labels generated images is the
committed demo CLIP, zero-shot (`classify`): a frozen copy, never the edited text encoder.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as nnf
from tqdm import tqdm

from razor.data import Manifest, load_images, read_manifest
from razor.demo import world
from razor.io import atomic_dir, sha256_file

DEMO_CLIP = Path(__file__).parent / "model"
AXES = ("objects", "styles")


def unet_config(cross_attention_dim: int) -> dict:
    """1.75 M parameters: 12×16×16 in, channels 32/64/64, cross-attention at 8×8 and 4×4."""
    return dict(sample_size=16, in_channels=12, out_channels=12, layers_per_block=1,
                block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8)


def prompts(pairs: list[tuple[str, str]]) -> list[str]:
    """The evaluation prompt of each (style, object) pair (UnlearnCanvas: "a {style} {object}")."""
    return [f"a {style} {obj}" for style, obj in pairs]


def grid_pairs() -> list[tuple[str, str]]:
    return [(s, o) for s in world.STYLES for o in world.OBJECTS]


class Classifier:
    """Zero-shot object and style labels of images in [-1, 1], by the committed demo CLIP."""

    def __init__(self, folder: str | Path = DEMO_CLIP):
        from razor.adapters.clip import load_clip
        from razor.zeroshot import label_embeddings

        self.clip = load_clip(str(folder))
        labels = {a: list(world.labels()[a]) for a in AXES}
        self.labels = labels
        self.embeddings = label_embeddings(self.clip, labels, world.LABEL_PROMPTS)
        p = self.clip.preprocess
        self.mean, self.std = torch.tensor(p["mean"]).view(1, 3, 1, 1), torch.tensor(p["std"]).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, list[str]]:
        x = ((images.cpu().float() + 1) / 2 - self.mean) / self.std
        size = self.clip.preprocess["size"]
        if x.shape[-1] != size:
            x = nnf.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        emb = torch.cat([self.clip.encode_images(b) for b in x.split(256)])
        return {a: [self.labels[a][i] for i in (emb @ e.T).argmax(1).tolist()] for a, e in self.embeddings.items()}


def evaluate_sd(adapter, classifier: Classifier, seeds: int = 2, steps: int = 20, guidance: float = 4.0) -> dict:
    """Per axis, the share of "a {style} {object}" generations the classifier labels right."""
    from razor.sd.metrics import AXES as ORDER
    from razor.sd.metrics import draw

    drawn = draw(adapter, classifier, seeds, steps, guidance)
    return {axis: sum(s == p[ORDER.index(axis)] for s, p in zip(drawn.said[axis], drawn.pairs)) / len(drawn.pairs)
            for axis in AXES}


def shape_items(manifest: Manifest) -> Manifest:
    return manifest.filter(lambda r: bool(r.get("objects")) and bool(r.get("styles")))


def train_sd(out: str | Path, manifest_path: str | Path | None = None, seed: int = 0, steps: int = 2000,
             batch_size: int = 64, lr: float = 1e-3, minutes: float = 28.0, progress: bool = True) -> dict:
    """Train the demo diffusion model on the train split's shape images and write it to `out`
    (atomically) with `training.json`; stops early after `minutes` of training."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTokenizer

    from razor.adapters.sd import SdAdapter
    from razor.demo.dataset import demo_manifest

    torch.manual_seed(seed)
    manifest = read_manifest(manifest_path or demo_manifest())
    train = shape_items(manifest.split("train"))
    images = torch.from_numpy(load_images(train, 32, (0.5,) * 3, (0.5,) * 3))
    captions = [r["caption"] for r in train.rows]
    clip = CLIPModel.from_pretrained(DEMO_CLIP, use_safetensors=True)
    text = clip.text_model.eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(DEMO_CLIP)
    unet = UNet2DConditionModel(**unet_config(text.config.hidden_size))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                              clip_sample=False)
    adapter = SdAdapter(text, tokenizer, unet, DDIMScheduler.from_config(scheduler.config), None, "demo-sd")
    unique = sorted(set(captions) | {""})
    with torch.no_grad():
        states = torch.cat([adapter.encode(unique[i:i + 256]) for i in range(0, len(unique), 256)])
    caption_id = torch.tensor([unique.index(c) for c in captions])
    empty = unique.index("")
    latents = adapter.to_latents(images)
    ema = [p.detach().clone() for p in unet.parameters()]
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    def warmup_cosine(s: int) -> float:
        return min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)
    gen = torch.Generator().manual_seed(seed)
    t0, done = time.perf_counter(), 0
    unet.train()
    for step in tqdm(range(steps), desc="train demo SD", disable=not progress, leave=False):
        pick = torch.randint(len(latents), (batch_size,), generator=gen)
        x0 = latents[pick]
        ids = torch.where(torch.rand(batch_size, generator=gen) < 0.1, torch.tensor(empty), caption_id[pick])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        loss = nnf.mse_loss(adapter.eps(scheduler.add_noise(x0, noise, t), t, states[ids]), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for e, p in zip(ema, unet.parameters()):
                e.lerp_(p, 1 - min(0.999, (1 + step) / (10 + step)))
        done = step + 1
        if time.perf_counter() - t0 > minutes * 60:
            break
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for e, p in zip(ema, unet.parameters()):
            p.copy_(e)
    unet.eval()
    accuracy = evaluate_sd(adapter, Classifier())
    info = dict(seed=seed, steps=done, batch_size=batch_size, lr=lr, seconds=round(seconds, 1),
                manifest_sha256=sha256_file(manifest.path), generated_accuracy=accuracy,
                clip_sha256=sha256_file(DEMO_CLIP / "model.safetensors"))
    with atomic_dir(out, "training.json") as tmp:
        save_folder(adapter, tmp)
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
    return info


def save_folder(adapter, folder: Path) -> None:
    """The diffusers layout: model_index.json and one subfolder per part (safetensors)."""
    adapter.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    adapter.tokenizer.save_pretrained(folder / "tokenizer")
    adapter.unet.save_pretrained(folder / "unet", safe_serialization=True)
    adapter.scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": _version(),
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", type(adapter.scheduler).__name__],
             "vae": [None, None], "safety_checker": [None, None], "feature_extractor": [None, None],
             "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def _version() -> str:
    import diffusers

    return diffusers.__version__
