"""The demo VLM: a tiny LLaVA — the demo CLIP's vision tower, a small Llama language model and a
word-level tokenizer — trained on demo-world questions (`razor demo train-vlm`), each asked in
the adapter's wording or one of its held-out wordings (`HELDOUT`, the final metrics' `fa_paraphrase`):

    <s> <image>×16 who is this ? → hana </s>
    <s> <image>×16 whose face is shown here ? → hana </s>
    <s> <image>×16 what shape is this ? → star </s>
    <s> <image>×16 what style is this drawn in ? → dotted </s>

The vision tower is copied from the demo CLIP and frozen; the projector and the language model
are trained on the train split's answer tokens (through `razor.families.vlm.adapter`). `evaluate_vlm`
reports the share of greedy answers that are right, per question type, on a split.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from tqdm import tqdm
from transformers import CLIPModel, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerFast

from razor.data import Manifest, read_manifest
from razor.demo import DEMO_CLIP, DEMO_VLM, world
from razor.demo.dataset import demo_manifest
from razor.families.vlm.adapter import HELDOUT, QUESTIONS, LlavaAdapter, load_llava
from razor.io import atomic_dir, sha256_file
from razor.models import image_preprocess
from razor.pairs import Pairs

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
PREPROCESS = image_preprocess(DEMO_CLIP, 32)  # the demo CLIP's (its preprocessor_config.json travels with the VLM)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the questions and every label of the demo world (offline)."""
    words = {w for q in [*QUESTIONS.values(), *sum(HELDOUT.values(), ())] for w in q.split()}
    words |= {lab for labs in world.labels().values() for lab in labs}
    vocab = {t: i for i, t in enumerate([*SPECIALS, *sorted(words)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})


def demo_vlm_config(tokenizer, clip: CLIPModel) -> LlavaConfig:
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    vision = clip.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=patches,
                       vision_feature_layer=-1, vision_feature_select_strategy="default", projector_hidden_act="gelu")


def questions(manifest: Manifest) -> list[tuple[int, str, str]]:
    """(row, axis, answer) for every question a row's labels answer."""
    return [(i, axis, r[axis]) for i, r in enumerate(manifest.rows) for axis in QUESTIONS if r.get(axis)]


def evaluate_vlm(adapter: LlavaAdapter, manifest: Manifest, heldout: bool = False) -> dict[str, float]:
    """Share of right answers per question type (axis) on a manifest, asked in the adapter's wording
    (`heldout`: in each held-out wording, pooled)."""
    qs = [(i, axis, truth, q) for i, axis, truth in questions(manifest)
          for q in (adapter.heldout[axis] if heldout else (adapter.questions[axis],))]
    pixels = Pairs.load(manifest, PREPROCESS).pixels
    adapter.model.eval()
    got = adapter.answers(pixels[[i for i, _, _, _ in qs]], [q for _, _, _, q in qs])
    right: dict[str, list[bool]] = {}
    for (_, axis, truth, _), said in zip(qs, got):
        right.setdefault(axis, []).append(said == truth)
    return {axis: sum(v) / len(v) for axis, v in right.items()}


def train_vlm(out: str | Path, manifest_path: str | Path | None = None, seed: int = 0, steps: int = 2000,
              batch_size: int = 96, lr: float = 3e-3, progress: bool = True) -> dict:
    """Train the demo VLM on the train split and write it to `out` (atomically) with `training.json`."""
    torch.manual_seed(seed)
    manifest = read_manifest(manifest_path or demo_manifest())
    tokenizer = build_tokenizer()
    clip = CLIPModel.from_pretrained(DEMO_CLIP, use_safetensors=True)
    model = LlavaForConditionalGeneration(demo_vlm_config(tokenizer, clip))
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.model.vision_tower.requires_grad_(False)
    adapter = LlavaAdapter(model, tokenizer, PREPROCESS, "demo-vlm")
    train = manifest.split("train")
    qs = questions(train)
    pixels = Pairs.load(train, PREPROCESS).pixels
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in tqdm(range(steps), desc="train demo VLM", disable=not progress, leave=False):
        pick = torch.randint(len(qs), (batch_size,), generator=gen).tolist()
        how = torch.rand(batch_size, generator=gen).tolist()  # each item in one of its axis's wordings
        items = [qs[i] for i in pick]
        asked = [(adapter.questions[a], *adapter.heldout[a]) for _, a, _ in items]
        loss = adapter.answer_loss(pixels[[i for i, _, _ in items]], [w[int(h * len(w))] for w, h in zip(asked, how)],
                                   [ans for _, _, ans in items])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.perf_counter() - t0
    test = manifest.split("test")
    accuracy = evaluate_vlm(adapter, test)
    info = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, seconds=round(seconds, 1),
                manifest_sha256=sha256_file(manifest.path), test_accuracy=accuracy,
                test_accuracy_heldout_wordings=evaluate_vlm(adapter, test, heldout=True),
                clip_sha256=sha256_file(DEMO_CLIP / "model.safetensors"))
    with atomic_dir(out, "training.json") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.copy2(DEMO_CLIP / "preprocessor_config.json", tmp)
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
    return info


def load_demo_vlm(folder: str | Path = DEMO_VLM) -> LlavaAdapter:
    """The committed demo VLM and its tokenizer (safetensors only)."""
    return load_llava(str(folder))
