"""Non-thinking rows (`/no_think`): QA rows with their answers, plain, no tags (keye.md 4.2).

    QA row ─▶ question + " /no_think" ─▶ the reference answer as it is ─▶ format check ─▶ `<id>@nothink`

No generation; a reasoning trace the row came with is left out (the row is plain by definition).
Video rows go to the video builders instead.
"""
from __future__ import annotations

from mixture.common import QA, Builder
from schemas.sample import ContentPart, Sample


class NonThinkingBuilder(Builder):
    category = "non_thinking"

    def section(self):
        return self.b.non_thinking

    def build(self, sample: Sample, qa: QA):
        row = self.derive(sample, qa, [ContentPart("text", text=qa.answer)])
        return self.finish(sample, row)
