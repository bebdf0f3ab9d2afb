"""The demo recipe: train a tiny CLIP contrastively on a manifest; with `exclude`, the retrain oracle."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import CLIPModel

from razor.data import Manifest, read_manifest
from razor.demo.tokenizer import build_tokenizer
from razor.errors import DataError
from razor.families.clip.adapter import ClipAdapter, contrastive_loss, demo_config
from razor.families.clip.zeroshot import accuracy, image_embeddings, label_embeddings, ranks
from razor.io import atomic_dir, sha256_file
from razor.pairs import Pairs

MEAN = STD = (0.5, 0.5, 0.5)


def vocabulary(manifest: Manifest) -> list[str]:
    """Every word of the manifest's captions, labels and label prompts."""
    words = set()
    for r in manifest.rows:
        words |= set(r["caption"].lower().split())
    for axis, labs in manifest.labels().items():
        words |= set(manifest.prompts[axis].replace("{}", " ").lower().split())
        for lab in labs:
            words |= set(lab.lower().split())
    return sorted(words)


def train(
    manifest_path: str | Path,
    out: str | Path,
    exclude: str | None = None,
    seed: int = 0,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    progress: bool = True,
) -> dict:
    """Train the demo CLIP on the manifest's train split and write it to `out` (atomically)."""
    torch.manual_seed(seed)
    manifest = read_manifest(manifest_path)
    labels = manifest.labels()
    tokenizer = build_tokenizer(vocabulary(manifest))
    train_rows = manifest.split("train")
    if exclude:
        axis, label = manifest.resolve_concept(exclude)
        train_rows = train_rows.filter(lambda r: r[axis] != label)
    if len(train_rows) == 0:
        raise DataError(f"nothing to train on: the manifest's train split{' without ' + exclude if exclude else ''} is empty")
    size = 32
    config = demo_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, size)
    adapter = ClipAdapter(CLIPModel(config), tokenizer, {"size": size, "mean": MEAN, "std": STD})
    data = Pairs.load(train_rows, adapter.preprocess, labels)
    tokens = adapter.tokenize(data.captions)
    model = adapter.model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    bar = tqdm(range(steps), desc="train demo CLIP", disable=not progress)
    for step in bar:
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        pixels = augment(data.pixels[idx], gen)
        batch_tokens = {k: v[idx][:, : int(tokens["attention_mask"][idx].sum(1).max())] for k, v in tokens.items()}
        logits = model.logit_scale.exp() * adapter.encode_images(pixels) @ adapter.encode_texts(batch_tokens).T
        loss = contrastive_loss(logits, data.positives(idx, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    seconds = time.time() - start
    test = Pairs.load(manifest.split("test"), adapter.preprocess, labels)
    top = ranks(image_embeddings(adapter, test.pixels), label_embeddings(adapter, labels, manifest.prompts))
    record = dict(
        manifest=str(manifest_path), manifest_sha256=sha256_file(manifest_path), exclude=exclude, seed=seed,
        steps=steps, batch_size=batch_size, lr=lr, train_items=len(data), seconds=round(seconds, 1),
        test_accuracy=accuracy(top, test.label_ids), labels=labels, prompts=manifest.prompts,
    )
    save(adapter, out, record)
    return record


def augment(pixels: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Label-preserving jitter: random horizontal flips and shifts of up to `shift` pixels."""
    flip = torch.rand(len(pixels), generator=gen) < 0.5
    pixels = torch.where(flip[:, None, None, None], pixels.flip(3), pixels)
    padded = torch.nn.functional.pad(pixels, (shift,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
    size = pixels.shape[-1]
    return padded[..., dy : dy + size, dx : dx + size]


def save(adapter: ClipAdapter, out: str | Path, record: dict) -> Path:
    """Write model (safetensors), config, tokenizer, preprocessing and the training record."""
    out = Path(out)
    with atomic_dir(out, "training.json") as tmp:
        adapter.model.save_pretrained(tmp, safe_serialization=True)
        adapter.tokenizer.save_pretrained(tmp)
        pre = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": adapter.preprocess["size"]},
               "crop_size": {"height": adapter.preprocess["size"], "width": adapter.preprocess["size"]},
               "do_center_crop": True, "do_normalize": True, "do_resize": True, "resample": 3,
               "image_mean": list(adapter.preprocess["mean"]), "image_std": list(adapter.preprocess["std"])}
        (tmp / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
        (tmp / "training.json").write_text(json.dumps(record, indent=2))
    return out
