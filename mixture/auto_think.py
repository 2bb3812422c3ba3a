"""Auto-think rows (no suffix, or a configured one): `<analysis>` judging the difficulty, whose last
sentence chooses a mode, then that mode's format (keye.md 4.4, 8).

    decide_by: generator                        decide_by: pass_rate
    QA ─analysis_prompt─▶ analysis               QA ─N paths─▶ pass rate (never solved: rejected)
       its last sentence chooses                    < hard_pass_rate: think, else no_think
                                                    ─explain_prompt(mode)─▶ analysis (must agree)
    think:    <analysis>..</analysis>\\n<think>best correct path (or the row's trace)</think>\\n<answer>..</answer>
    no_think: <analysis>..</analysis>\\n the reference answer
    ─▶ repetition + format gates ─▶ `<id>@auto`
"""
from __future__ import annotations

from typing import Optional

from mixture.common import QA, Builder
from mixture.formats import analysis_block, chosen_mode, closed_form, thinking
from mixture.generate import Call, MediaUnavailable
from schemas.reasons import Reason
from schemas.sample import ContentPart, Sample


class AutoThinkBuilder(Builder):
    category = "auto_think"

    def needs_generator(self) -> bool:
        return self.b.auto_think.enabled

    def section(self):
        return self.b.auto_think

    def build(self, sample: Sample, qa: QA):
        cfg = self.b.auto_think
        try:
            images = self.images_of(sample)
        except MediaUnavailable as e:
            return self.reject(sample, Reason.GENERATION_FAILED, str(e))
        records, paths = [], None
        if cfg.decide_by == "pass_rate":
            paths = self.sample_paths(sample, qa, cfg.prompt, {}, images)
            rejected = self.judge_paths(sample, paths, too_easy=False)
            if rejected is not None:
                return rejected
            mode = "think" if paths.pass_rate < cfg.hard_pass_rate else "no_think"
            res = self.generator.run([Call(sample.id, cfg.explain_prompt, {"question": qa.question, "mode": mode},
                                           images, target="analysis")])[0]
        else:
            res = self.generator.run([Call(sample.id, cfg.analysis_prompt, {"question": qa.question}, images,
                                           target="analysis")])[0]
            mode = chosen_mode(res.text) if res.ok else None
        if not res.ok:
            return self.reject(sample, Reason.GENERATION_FAILED, f"analysis: {res.error}")
        analysis = res.text.strip()
        if chosen_mode(analysis) != mode or mode is None:
            return self.reject(sample, Reason.BAD_FORMAT, f"the analysis chooses {chosen_mode(analysis)!r}, "
                               f"wanted {mode!r}: {analysis[-200:]!r}")
        records.append(res.record)
        generated = analysis
        if mode == "no_think":
            body = analysis_block(analysis) + qa.answer
        else:
            reasoning = self._reasoning(sample, qa, images, paths, records)
            if not isinstance(reasoning, str):
                return reasoning
            generated += "\n" + reasoning
            body = analysis_block(analysis) + thinking(reasoning, qa.answer, closed_form(qa.answer,
                                                                                          self.b.boxed_max_words))
        row = self.derive(sample, qa, [ContentPart("text", text=body)], records=records)
        return self.finish(sample, row, generated=generated)

    def _reasoning(self, sample: Sample, qa: QA, images, paths, records):
        """The /think branch's trace: the row's own, or the best of (already or newly) sampled paths."""
        if qa.reasoning is not None and paths is None:
            return qa.reasoning
        if paths is None:
            paths = self.sample_paths(sample, qa, self.b.auto_think.prompt, {}, images)
            rejected: Optional[object] = self.judge_paths(sample, paths, too_easy=False)
            if rejected is not None:
                return rejected
        reasoning, record = self.best_path(sample, paths)
        records.append(record)
        return reasoning
