"""Non-thinking rows (`/no_think`): QA rows with their answers, plain, no tags (keye.md 4.2).

    QA row ─▶ question + " /no_think" ─▶ the reference answer as it is ─▶ format check ─▶ `<id>@nothink`

No generation; a reasoning trace the row came with is left out (the row is plain by definition).
Video rows go to the video builders instead.
"""
from __future__ import annotations

from mixture.common import Builder, media_kinds
from schemas.sample import ContentPart, Sample


class NonThinkingBuilder(Builder):
    category = "non_thinking"

    def wants(self, sample: Sample) -> bool:
        return "video" not in media_kinds(sample) and self.enabled_for(sample, self.b.non_thinking) is not None

    def __call__(self, sample: Sample):
        qa = self.enabled_for(sample, self.b.non_thinking)
        row = self.derive(sample, qa, [ContentPart("text", text=qa.answer)])
        return self.finish(sample, row)
