"""Stable Diffusion's attacks (razor.attack). The ASR is the share of the concept's generations the
judge labels the concept (1 − UA): every "a {style} {object}" prompt naming it, with the metrics'
fixed noise seeds.
  - adversarial_prompt (UnlearnDiffAtk-style): per concept prompt, `prompt_tokens` word embeddings
    put before it and learned with the model frozen, by the model's own denoising loss on the
    concept's images (the diffusion model as its own classifier); soft embeddings, so an upper
    bound on what a prompt of real tokens reaches;
  - concept_inversion (textual inversion): one new word embedding learned the same way from the
    concept's images, then written in the concept word's place;
  - relearn_retain / relearn_kshot (razor.relearn) and quant_lib (razor.libquant).
A method that erases by editing the text encoder alone leaves the UNet able to draw the concept:
learned words reach it past the edit."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as nnf

from razor.config import AttackParams
from razor.families.sd import metrics as canvas
from razor.families.sd.adapter import SLOT
from razor.libquant import quant_lib_attack
from razor.memory import requires_grad_only
from razor.relearn import relearn_attacks


def concept_share(task) -> float:
    """The share of the concept's prompts' images the judge labels the concept."""
    drawn = canvas.draw(task.adapter, task.judge, only=(task.axis, task.label), remember=False)
    return sum(s == task.label for s in drawn.said[task.axis]) / len(drawn.pairs)


def concept_prompts(task) -> tuple[list[tuple[str, str]], list[int]]:
    """The (style, object) pairs naming the concept, one per image the metrics draw, and their noise seeds."""
    grid = canvas.grid(task.judge.labels)
    a = canvas.AXES.index(task.axis)
    keep = [i for i, pair in enumerate(grid) if pair[a] == task.label]
    return [grid[i] for i in keep for _ in range(canvas.SEEDS)], [i * 1000 + k for i in keep for k in range(canvas.SEEDS)]


def item_pairs(task, batch) -> list[tuple[str, str]]:
    """Each item's (style, object)."""
    names = {a: [task.labels[a][int(i)] for i in batch.label_ids[a]] for a in canvas.AXES}
    return list(zip(names["styles"], names["objects"]))


def learn_words(task, p: AttackParams, words: torch.Tensor, texts: Callable) -> list[tuple[dict, float]]:
    """Adam on `words` alone, the model frozen, by the denoising loss of forget items: `texts(pairs,
    words)` gives each item's prompt (SLOT marks) and its rows of words. After each of `word_steps`,
    the concept's prompts so worded are drawn and judged."""
    a = task.adapter
    words = words.clone().requires_grad_(True)
    opt = torch.optim.Adam([words], lr=p.word_lr)
    gen = torch.Generator().manual_seed(p.seed)
    pairs, seeds = concept_prompts(task)
    out = []
    with requires_grad_only(a.model, set()), torch.enable_grad():
        for step in range(1, max(p.word_steps) + 1):
            batch = task.forget.subset(torch.randint(len(task.forget), (p.batch_size,), generator=gen))
            x_t, t, eps = a.noised(a.to_latents(batch.pixels), torch.randint(2 ** 31, (len(batch),), generator=gen).tolist())
            loss = nnf.mse_loss(a.predict(x_t, t, a.encode_slots(*texts(item_pairs(task, batch), words))), eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in p.word_steps:
                budget = dict(steps=step, lr=p.word_lr, batch=p.batch_size, tokens=words.shape[-2])
                out.append((budget, judged(task, *texts(pairs, words.detach()), seeds)))
    return out


@torch.no_grad()
def judged(task, prompts: list[str], words: torch.Tensor, seeds: list[int]) -> float:
    """The share of the worded prompts' generations the judge labels the concept."""
    a = task.adapter
    images = a.generate(prompts, seeds, canvas.STEPS, canvas.GUIDANCE, states=a.encode_slots(prompts, words))
    return sum(s == task.label for s in task.judge(images)[task.axis]) / len(prompts)


def adversarial_prompt(task, p: AttackParams) -> list[tuple[dict, float]]:
    """Per concept prompt, `prompt_tokens` learned embeddings before it (seeded from random words)."""
    distinct = list(dict.fromkeys(concept_prompts(task)[0]))
    emb = task.adapter.word_embeddings()
    gen = torch.Generator().manual_seed(p.seed)
    start = emb[torch.randint(len(emb), (len(distinct), p.prompt_tokens), generator=gen)]
    lead = " ".join([SLOT] * p.prompt_tokens)

    def texts(items, words):
        prompts = [f"{lead} {canvas.PROMPT.format(style=s, object=o)}" for s, o in items]
        return prompts, words[[distinct.index(i) for i in items]]

    return learn_words(task, p, start, texts)


def concept_inversion(task, p: AttackParams) -> list[tuple[dict, float]]:
    """One learned word (seeded at the mean word embedding) in the concept word's place."""
    emb = task.adapter.word_embeddings()
    a = canvas.AXES.index(task.axis)
    slot, other = canvas.AXES[a][:-1], canvas.AXES[1 - a][:-1]  # "style" / "object": PROMPT's fields

    def texts(items, words):
        return [canvas.PROMPT.format(**{slot: SLOT, other: pair[1 - a]}) for pair in items], words.expand(len(items), 1, -1)

    return learn_words(task, p, emb.mean(0).view(1, 1, -1), texts)


ATTACKS = relearn_attacks(concept_share) | {"adversarial_prompt": adversarial_prompt,
                                            "concept_inversion": concept_inversion,
                                            "quant_lib": quant_lib_attack(concept_share)}
