"""A VLM unlearning task: the same curated sets as CLIP's, asked as questions.

Each item is asked the question of every axis it has a label on (the adapter's `questions`):
the forget items the concept axis's question (F: cross-entropy of their own concept answer,
ascended), the retain items all of theirs (R: next-token loss on the answers; M: drift of the
answer-word log-probabilities against θ0). A request may forget several labels of one axis
("identities:hana+ivan"): a forget item's answer must then name none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from razor.errors import DataError
from razor.pairs import Pairs
from razor.task import Task


@dataclass(frozen=True)
class Questions:
    """One row per (item, question): the item's pixels, the question, the right answer, its axis."""

    pixels: torch.Tensor
    questions: list[str]
    answers: list[str]
    axes: list[str]

    def __len__(self) -> int:
        return len(self.questions)


@dataclass
class VlmTask(Task):
    multi_label = True

    @classmethod
    def load(cls, adapter, sets, batch_size: int = 128) -> "VlmTask":
        missing = [a for a in sets.forget.labels() if a not in adapter.questions]
        if missing:
            raise DataError(f"the VLM has no question for the axes {', '.join(missing)} of the data; "
                            f"its questions cover {', '.join(adapter.questions)}")
        return super().load(adapter, sets, batch_size)

    @property
    def targets(self) -> list[str]:
        """The labels this request forgets."""
        return self.label.split("+") if self.label not in self.labels[self.axis] else [self.label]

    def asked(self, pairs: Pairs, axes: tuple[str, ...] | None = None) -> Questions:
        """Every question the items' labels answer (on `axes`, default all)."""
        rows = [(i, axis, pairs.labels[axis][int(pairs.label_ids[axis][i])])
                for i in range(len(pairs)) for axis in (axes or tuple(pairs.labels)) if pairs.label_ids[axis][i] >= 0]
        q = self.adapter.questions
        return Questions(pairs.pixels[[i for i, _, _ in rows]], [q[a] for _, a, _ in rows], [ans for _, _, ans in rows],
                         [a for _, a, _ in rows])

    def answer_tokens(self) -> list[int]:
        """The first token of every label's answer (the words M watches)."""
        return sorted({self.adapter.answer_token(lab) for labs in self.labels.values() for lab in labs})

    # -- the family's objectives on one batch (METHOD.md §6) -----------------------------------
    def forget_loss(self, batch: Pairs, axis: str, label: str) -> torch.Tensor:
        """F on items carrying `axis:label` (several labels: "a+b"): the answer must name none of them."""
        qa = self.asked(batch, (axis,))
        return self.adapter.forget_objective(qa.pixels, qa.questions, self.targets if label == self.label else [label])

    def retain_loss(self, batch: Pairs) -> torch.Tensor:
        qa = self.asked(batch)
        return self.adapter.retain_loss(qa.pixels, qa.questions, qa.answers)

    def drift_loss(self, batch: Pairs, frozen: torch.Tensor) -> torch.Tensor:
        qa = self.asked(batch)
        return self.adapter.drift_penalty(qa.pixels, qa.questions, frozen, self.answer_tokens())

    @torch.no_grad()
    def frozen_output(self, batch: Pairs) -> torch.Tensor:
        qa = self.asked(batch)
        return self.adapter.frozen_logits(qa.pixels, qa.questions, self.answer_tokens())
