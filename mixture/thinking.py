"""Thinking rows (`/think`): `<think>reasoning</think><answer>... \\boxed{X}</answer>` (keye.md 4.3).

    traced QA row ─────────────────────────────────────────────▶ the trace as <think>
    untraced QA row ─N paths─▶ verify ─▶ drop wrong / repetitive ─▶ pass rate
        0 correct: never_solved · pass rate >= too_easy_pass_rate: too_easy
        else the most representative correct path (mixture/paths.py) ─▶ <think>
    ─▶ <answer>: the reference answer, \\boxed{} when closed-form ─▶ repetition + format gates ─▶ `<id>@think`

Rows with a trace keep it (no generation); `thinking.generate: false` takes only those.
"""
from __future__ import annotations

from mixture.common import QA, Builder
from mixture.formats import closed_form, thinking
from mixture.generate import MediaUnavailable
from schemas.reasons import Reason
from schemas.sample import ContentPart, Sample


class ThinkingBuilder(Builder):
    category = "thinking"

    def section(self):
        return self.b.thinking

    def prompt_values(self, sample: Sample, images: list[bytes]) -> dict:
        return {}

    def needs_generator(self) -> bool:
        return self.section().enabled and self.section().generate

    def wants(self, sample: Sample) -> bool:
        qa = self.enabled_for(sample, self.section())
        return qa is not None and self.material(sample) and (qa.reasoning is not None or self.section().generate)

    def build(self, sample: Sample, qa: QA):
        boxed = closed_form(qa.answer, self.b.boxed_max_words)
        if qa.reasoning is not None:
            row = self.derive(sample, qa, [ContentPart("text", text=thinking(qa.reasoning, qa.answer, boxed))])
            return self.finish(sample, row)
        try:
            images = self.images_of(sample, self.max_frames())
        except MediaUnavailable as e:
            return self.reject(sample, Reason.GENERATION_FAILED, str(e))
        paths = self.sample_paths(sample, qa, self.section().prompt, self.prompt_values(sample, images), images)
        rejected = self.judge_paths(sample, paths, too_easy=True)
        if rejected is not None:
            return rejected
        reasoning, record = self.best_path(sample, paths)
        row = self.derive(sample, qa, [ContentPart("text", text=thinking(reasoning, qa.answer, boxed))],
                          records=[record])
        return self.finish(sample, row, generated=reasoning)

    def max_frames(self) -> int:
        return self.b.video.max_frames
