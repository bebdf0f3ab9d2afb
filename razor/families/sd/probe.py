"""The step search's validation measurements on a diffusion model: a few DDIM steps of every prompt naming the
concept (the adapter's `probe_draws` noise seeds each) and of a seeded sample of the other prompts (one each;
val noise seeds, not the test ones), labelled by the task's classifier. FA is the share of concept images
still labelled the concept; retain the share of other images labelled as θ0 labelled them, on the axis that
kept fewer (IRA and CRA must each hold, so one axis's loss is not averaged away)."""

from __future__ import annotations

import random

import torch

from razor.families.sd.metrics import AXES, GUIDANCE, grid, prompts
from razor.families.sd.task import SdTask
from razor.probe import Measure, WholeProbe, margins

STEPS = 10  # DDIM steps per probe image
RETAIN_PROMPTS = 32
VAL_SEEDS = 500  # noise seed offset of the val prompts (the test protocol draws from 0)


class SdProbe(WholeProbe):
    """Validation metrics of the current diffusion model (each measurement draws every probe prompt)."""

    def __init__(self, task: SdTask, cache=None, reuse: bool = True):
        super().__init__(task)
        a = AXES.index(task.axis)
        pairs = grid(task.classifier.labels)
        kept = {(AXES.index(axis), task.labels[axis][cid]) for axis, cid in task.kept_ids() if axis in AXES}
        concept = [p for p in pairs if p[a] == task.label]
        draws = task.adapter.probe_draws
        self.forget = [p for p in concept for _ in range(draws)]
        rest = [p for p in pairs if p[a] != task.label]
        self.kept = [p for p in rest if any(p[i] == lab for i, lab in kept)]
        others = [p for p in rest if p not in self.kept]
        self.retain = sorted(random.Random(0).sample(others, min(RETAIN_PROMPTS, len(others))), key=pairs.index)
        self.seeds = [VAL_SEEDS + 1000 * pairs.index(p) + k for p in concept for k in range(draws)]
        self.seeds += [VAL_SEEDS + 1000 * pairs.index(p) for p in self.retain + self.kept]
        self.current = self.measure()

    @torch.no_grad()
    def measure(self, component=None) -> Measure:
        t = self.task
        images = t.adapter.generate(prompts(self.forget + self.retain + self.kept), self.seeds, STEPS, GUIDANCE)
        probs = t.classifier.probabilities(images)
        labels = t.classifier.labels
        nf, nr = len(self.forget), len(self.retain)
        cid = labels[t.axis].index(t.label)
        fa = (probs[t.axis][:nf].argmax(1) == cid).float().mean().item()
        concept_p = probs[t.axis][:nf, cid].mean().item()
        pred = {axis: probs[axis][nf:nf + nr].argmax(1) for axis in AXES}
        if self.reference is None:
            self.reference = pred
        same = min((pred[x] == self.reference[x]).float().mean().item() if nr else 1.0 for x in AXES)
        accs = [(pred[x] == torch.tensor([labels[x].index(p[i]) for p in self.retain])).float().mean().item()
                for i, x in enumerate(AXES)]
        return Measure(fa, concept_p, same, sum(accs) / len(accs), self._kept_fa(probs, nf + nr),
                       margins(probs[t.axis][:nf].clamp_min(1e-30).log(), cid))

    def _kept_fa(self, probs: dict[str, torch.Tensor], start: int) -> float:
        fas = [0.0]
        for axis, cid in self.task.kept_ids():
            if axis not in AXES:
                continue
            i, label = AXES.index(axis), self.task.labels[axis][cid]
            has = [k for k, p in enumerate(self.kept) if p[i] == label]
            if has:
                said = probs[axis][start:][has].argmax(1)
                fas.append((said == self.task.classifier.labels[axis].index(label)).float().mean().item())
        return max(fas)
