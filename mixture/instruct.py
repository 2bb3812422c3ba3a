"""The non-thinking (instruct) builder: curated QA rows with a plain answer become `/no_think`
samples (Keye-VL's 330k non-reasoning share). Beam-free; no generation needed.

Rows whose answer carries a reasoning trace are thinking material, videos go to the video
builders (mixture/variants.py), caption pairs have no question: none of them is wanted here.
"""
from __future__ import annotations

from mixture.base import BuildResult
from mixture.variants import answer_message, derive
from schemas.sample import Sample

TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<analysis>", "</analysis>")


class NonThinkingBuilder:
    category = "non_thinking"

    def setup(self) -> None:
        pass

    def wants(self, sample: Sample) -> bool:
        answer = answer_message(sample)
        return (answer is not None and not answer.reasoning and sample.mode in (None, "no_think")
                and not any(m.kind == "video" for m in sample.media)
                and not any(tag in t for t in sample.texts() for tag in TAGS))

    def __call__(self, sample: Sample) -> BuildResult:
        return [derive(sample, "no_think", "no_think")]
