"""The demo diffusion model: a tiny text-to-image model in the Stable Diffusion folder layout,
trained on the demo world's objects × styles (`razor demo train-sd`).

    text_encoder/  the demo CLIP's text tower (frozen while training)
    tokenizer/     the demo CLIP's tokenizer
    unet/          a 1.7 M-parameter UNet2DConditionModel on the 3×32×32 image (pixel space, no VAE)
    scheduler/     1000 steps, squaredcos_cap_v2, ε-prediction, sampled with DDIM (x0 clipped to [-1, 1])

Captions are the world's own ("a dotted star", "a star drawn in dotted style", ...), half of them
replaced by the evaluation prompt "a {style} {object}"; 10% are dropped to "" for classifier-free
guidance. After the UNet come the two classifiers that label generated images, which no edit ever
touches: `classifier/` (the step search's: a small CNN with object and style heads, on the world's
training images) and `judge/` (the final metrics': the same kind of CNN, from another seed, on
images rendered afresh from an index range no manifest split uses; `razor demo train-judge`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from tqdm import tqdm

from razor.data import Manifest, load_images, read_manifest
from razor.demo import DEMO_CLIP, world
from razor.demo.dataset import demo_manifest
from razor.families.sd import metrics as canvas
from razor.families.sd.adapter import SdAdapter, load_sd, save_sd
from razor.families.sd.classifier import LabelNet, NetClassifier
from razor.io import atomic_dir, atomic_path, sha256_file

AXES = ("objects", "styles")


def unet_config(cross_attention_dim: int) -> dict:
    """1.7 M parameters on the 3×32×32 image: channels 16/32/64/64, cross-attention at 8×8 and 4×4."""
    return dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                block_out_channels=(16, 32, 64, 64),
                down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8)


JUDGE_OFFSET = 30_000_000  # world indices of the judge's images: past every manifest split's range (world.plan)


def train_classifier(images: torch.Tensor, rows: list[dict], seed: int = 0, steps: int = 600) -> LabelNet:
    """An image classifier (`LabelNet`: object and style heads) trained on `images` labelled by
    `rows` (batch 64, AdamW one-cycle 2e-3, random flips, mild pixel noise)."""
    torch.manual_seed(seed)
    net = LabelNet({a: list(world.labels()[a]) for a in canvas.AXES})
    truth = {a: torch.tensor([net.labels[a].index(r[a]) for r in rows]) for a in net.labels}
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        pick = torch.randint(len(images), (64,), generator=gen)
        x = images[pick]
        x = torch.where((torch.rand(64, generator=gen) < 0.5)[:, None, None, None], x.flip(3), x)
        out = net(x + 0.05 * torch.randn(x.shape, generator=gen))
        loss = sum(nnf.cross_entropy(out[a], truth[a][pick]) for a in net.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def judge_images(seed: int = 0, per_pair: int = 40) -> tuple[torch.Tensor, list[dict]]:
    """`per_pair` shape images of every object × style, rendered from world indices no manifest
    split uses, in [-1, 1], with their labels."""
    pairs = [(o, s) for o in world.OBJECTS for s in world.STYLES for _ in range(per_pair)]
    images = np.stack([np.asarray(world.sample(seed, JUDGE_OFFSET + k, "shape", p).image.convert("RGB"), np.float32)
                       for k, p in enumerate(pairs)])
    rows = [dict(objects=o, styles=s) for o, s in pairs]
    return torch.from_numpy(images / 127.5 - 1).permute(0, 3, 1, 2).contiguous(), rows


def train_judge(seed: int = 1, steps: int = 1200, per_pair: int = 40) -> tuple[LabelNet, dict]:
    """The independent judge: a `LabelNet` trained on `judge_images` (never on an image the SD
    model or its `classifier/` saw), and its training record."""
    images, rows = judge_images(seed, per_pair)
    return train_classifier(images, rows, seed, steps), dict(seed=seed, steps=steps, images=len(rows),
                                                             world_index_from=JUDGE_OFFSET)


def add_judge(folder: str | Path, seed: int = 1, steps: int = 1200, per_pair: int = 40) -> dict:
    """Train the judge of an SD folder, write it to `folder/judge/` (atomically) and record it,
    with how many of the folder's generations it labels right, in `training.json`."""
    folder = Path(folder)
    net, info = train_judge(seed, steps, per_pair)
    info["generated_accuracy"] = evaluate_sd(load_sd(str(folder)), NetClassifier(net))
    with atomic_dir(folder / "judge", "classifier.json") as tmp:
        net.save(tmp)
    record = json.loads((folder / "training.json").read_text()) if (folder / "training.json").is_file() else {}
    with atomic_path(folder / "training.json") as tmp:
        tmp.write_text(json.dumps(record | dict(judge=info), indent=2))
    return info


def evaluate_sd(adapter, judge, seeds: int = 2, steps: int = 20, guidance: float = 4.0) -> dict:
    """Per axis, the share of "a {style} {object}" generations the classifier labels right."""
    drawn = canvas.draw(adapter, judge, seeds, steps, guidance)
    return {axis: sum(s == p[canvas.AXES.index(axis)] for s, p in zip(drawn.said[axis], drawn.pairs)) / len(drawn.pairs)
            for axis in AXES}


def training_set(manifest_path: str | Path | None) -> tuple[Manifest, Manifest, torch.Tensor, list[str], list[str]]:
    """The manifest, its train split's shape items, their images (32 px, in [-1, 1]), captions and prompts
    ("a {style} {object}")."""
    manifest = read_manifest(manifest_path or demo_manifest())
    train = manifest.split("train").filter(lambda r: bool(r.get("objects")) and bool(r.get("styles")))
    images = torch.from_numpy(load_images(train, 32, (0.5,) * 3, (0.5,) * 3))
    return (manifest, train, images, [r["caption"] for r in train.rows],
            canvas.prompts([(r["styles"], r["objects"]) for r in train.rows]))


def fit(adapter, images: torch.Tensor, captions: list[str], named: list[str], loss, seed: int, steps: int,
        batch_size: int, lr: float, minutes: float, canonical: float, ema: float, progress: bool, desc: str) -> tuple[int, float]:
    """The demo diffusion recipe's loop, for the adapter's denoiser (the text encoders frozen): each image's
    caption, a `canonical` share of them replaced by its evaluation prompt `named`, 10 % dropped to "" for
    classifier-free guidance; `loss(x0, text states, generator, step)`; AdamW with warm-up and cosine decay;
    the weights kept as an EMA (decay `ema`, warmed up) and put in place at the end; stops after `minutes`.
    Returns (steps done, seconds)."""
    model = adapter.denoiser
    unique = sorted(set(captions) | set(named) | {""})
    with torch.no_grad():
        states = torch.cat([adapter.encode(unique[i:i + 256]) for i in range(0, len(unique), 256)])
    caption_id = torch.tensor([unique.index(c) for c in captions])
    named_id = torch.tensor([unique.index(c) for c in named])
    empty = unique.index("")
    latents = adapter.to_latents(images)
    shadow = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def warmup_cosine(s: int) -> float:
        return min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)
    gen = torch.Generator().manual_seed(seed)
    t0, done = time.perf_counter(), 0
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        pick = torch.randint(len(latents), (batch_size,), generator=gen)
        ids = torch.where(torch.rand(batch_size, generator=gen) < canonical, named_id[pick], caption_id[pick])
        ids = torch.where(torch.rand(batch_size, generator=gen) < 0.1, torch.tensor(empty), ids)
        value = loss(latents[pick], states[ids], gen, step)
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for e, p in zip(shadow, model.parameters()):
                e.lerp_(p, 1 - min(ema, (1 + step) / (10 + step)))
        done = step + 1
        if time.perf_counter() - t0 > minutes * 60:
            break
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for e, p in zip(shadow, model.parameters()):
            p.copy_(e)
    model.eval()
    return done, seconds


def train_sd(out: str | Path, manifest_path: str | Path | None = None, seed: int = 0, steps: int = 2400,
             batch_size: int = 32, lr: float = 1e-3, minutes: float = 28.0, canonical: float = 0.5, ema: float = 0.999,
             unet: dict | None = None, classifier_steps: int = 600, judge_steps: int = 1200,
             progress: bool = True) -> dict:
    """Train the demo diffusion model on the train split's shape images and write it to `out`
    (atomically) with `training.json`; stops early after `minutes` of training.

    A `canonical` share of the captions is replaced by the evaluation prompt "a {style} {object}";
    the UNet's weights are kept as an EMA (decay `ema`, warmed up)."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    manifest, train, images, captions, named = training_set(manifest_path)
    clip = CLIPModel.from_pretrained(DEMO_CLIP, use_safetensors=True)
    text = clip.text_model.eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(DEMO_CLIP)
    unet = UNet2DConditionModel(**(unet or unet_config(text.config.hidden_size)))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                              clip_sample=False)
    sampler = DDIMScheduler.from_config(scheduler.config, clip_sample=True)  # x0 clipped to [-1, 1] while sampling
    adapter = SdAdapter(text, tokenizer, unet, sampler, None, "demo-sd")

    def loss(x0: torch.Tensor, states: torch.Tensor, gen: torch.Generator, step: int) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (len(x0),), generator=gen)
        return nnf.mse_loss(adapter.predict(scheduler.add_noise(x0, noise, t), t, states), noise)

    done, seconds = fit(adapter, images, captions, named, loss, seed, steps, batch_size, lr, minutes, canonical, ema,
                        progress, "train demo SD")
    net = train_classifier(images, train.rows, seed, classifier_steps)
    accuracy = evaluate_sd(adapter, NetClassifier(net))
    judge, judged = train_judge(seed + 1, judge_steps)
    judged["generated_accuracy"] = evaluate_sd(adapter, NetClassifier(judge))
    info = dict(seed=seed, steps=done, batch_size=batch_size, lr=lr, canonical=canonical,
                ema=ema, classifier_steps=classifier_steps, seconds=round(seconds, 1),
                manifest_sha256=sha256_file(manifest.path), generated_accuracy=accuracy,
                clip_sha256=sha256_file(DEMO_CLIP / "model.safetensors"), judge=judged)
    with atomic_dir(out, "training.json") as tmp:
        save_sd(adapter, tmp)
        net.save(tmp / "classifier")
        judge.save(tmp / "judge")
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
    return info
