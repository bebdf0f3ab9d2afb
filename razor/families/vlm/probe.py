"""The step search's validation measurements on a VLM: one batched next-token pass over the
probe questions (forget-val items asked the concept question, retain-val items every question,
kept-val items the question of the concept they carry) gives FA, the concept probability,
agreement with θ0's answers and accuracy. The first answer token stands for the answer."""

from __future__ import annotations

import torch

from razor.families.vlm.task import Questions, VlmTask
from razor.probe import Measure, WholeProbe, margins

PROBE_BATCH = 256


class VlmProbe(WholeProbe):
    """Validation metrics of the current VLM (each measurement a full forward of the probe questions)."""

    def __init__(self, task: VlmTask, cache=None, reuse: bool = True):
        super().__init__(task)
        a = task.adapter
        self.forget = task.asked(task.forget_val, (task.axis,))
        self.retain = task.asked(task.retain_val)
        kept = task.kept_val if task.kept_val is not None and len(task.kept_val) else None
        self.kept = task.asked(kept, tuple({axis for axis, _ in task.kept_ids()})) if kept is not None else None
        self.targets = torch.tensor([a.answer_token(t) for t in task.targets])
        self.truth = {n: torch.tensor([a.answer_token(x) for x in qa.answers])
                      for n, qa in (("retain", self.retain), ("kept", self.kept)) if qa is not None}
        self.current = self.measure()

    @torch.no_grad()
    def measure(self, component=None) -> Measure:
        parts = [self.forget, self.retain, *([self.kept] if self.kept is not None else [])]
        probs = [self._next_token_probs(qa) for qa in parts]
        return self._score(*probs)

    def _next_token_probs(self, qa: Questions) -> torch.Tensor:
        a = self.task.adapter
        return torch.cat([a.next_token_logits(qa.pixels[s:s + PROBE_BATCH], qa.questions[s:s + PROBE_BATCH]).softmax(-1)
                          for s in range(0, len(qa), PROBE_BATCH)]).cpu()

    def _score(self, forget: torch.Tensor, retain: torch.Tensor, kept: torch.Tensor | None = None) -> Measure:
        said = forget.argmax(1)
        fa = torch.isin(said, self.targets).float().mean().item()
        concept_p = forget[:, self.targets].sum(1).mean().item()
        pred = retain.argmax(1)
        if self.reference is None:
            self.reference = pred
        right = pred == self.truth["retain"]
        axes = self.retain.axes
        accs = [right[[i for i, a in enumerate(axes) if a == axis]].float().mean().item() for axis in dict.fromkeys(axes)]
        return Measure(fa, concept_p, (pred == self.reference).float().mean().item(), sum(accs) / max(len(accs), 1),
                       self._kept_fa(kept), margins(forget.clamp_min(1e-30).log(), self.targets))

    def _kept_fa(self, kept: torch.Tensor | None) -> float:
        if kept is None:
            return 0.0
        said = kept.argmax(1) == self.truth["kept"]
        fas = [0.0]
        for axis, cid in self.task.kept_ids():
            label = self.task.labels[axis][cid]
            has = torch.tensor([a == axis and ans == label for a, ans in zip(self.kept.axes, self.kept.answers)])
            if has.any():
                fas.append(said[has].float().mean().item())
        return max(fas)
