"""ESD-x (Gandikota et al., ICCV 2023): fine-tune the UNet's cross-attention so that its noise
prediction on the concept's prompts follows the frozen model's negatively guided one,
    ε_θ(x_t, c) → ε0(x_t, ∅) − η·(ε0(x_t, c) − ε0(x_t, ∅)),
early-stopped once the probe's FA meets the target. (ESD draws x_t from the frozen model's own
sampling; with a forget set at hand, this one noises its images, as RAZOR's F does.)"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from tqdm import tqdm

from razor.config import EsdParams
from razor.delta import Delta
from razor.editing import EditResult, timed
from razor.families import of
from razor.memory import requires_grad_only


def esd_edit(task, p: EsdParams, progress: bool = True) -> EditResult:
    a = task.adapter
    params = a.parameters()
    names = a.text_attention()
    base = {n: params[n].detach().clone() for n in names}
    frozen = copy.deepcopy(a.denoiser).eval().requires_grad_(False)
    opt = torch.optim.Adam([params[n] for n in names], lr=p.lr)
    timing = defaultdict(float)  # seconds: training steps, probe measurements
    with timed(timing, "probes"):
        probe = of(a).probe(task)
    gen = torch.Generator().manual_seed(p.seed)
    with torch.no_grad():
        empty = a.unconditional(1)
    log = []
    bar = tqdm(range(1, p.max_steps + 1), desc="esd", disable=not progress, leave=False)
    with requires_grad_only(a.model, set(names)):
        for step in bar:
            batch = task.forget.subset(torch.randint(len(task.forget), (p.batch_size,), generator=gen))
            with timed(timing, "training"):
                concept, _ = task.prompts_of(batch, task.axis)
                x_t, t, _ = task.noised(batch)
                with torch.no_grad():
                    states = a.encode(concept)
                    e_c = a.predict(x_t, t, states, denoiser=frozen)
                    e_u = a.predict(x_t, t, empty.expand(len(batch), -1, -1), denoiser=frozen)
                loss = ((a.predict(x_t, t, states) - (e_u - p.eta * (e_c - e_u))) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if step % p.eval_every == 0 or step == p.max_steps:
                with timed(timing, "probes"):
                    m = probe.refresh()
                log.append(dict(step=step, loss=loss.item(), fa_val=m.fa, retain_val=m.retain))
                bar.set_postfix(fa=f"{m.fa:.2f}", retain=f"{m.retain:.3f}")
                if m.fa <= p.forget_target:
                    break
    delta = Delta.from_diff(base, {n: params[n] for n in names}, meta=dict(method="esd", components=[], base=a.source))
    delta.meta["components"] = delta.params
    return EditResult(delta, log, timing=dict(timing))
