"""The repetition gate on generated text: Keye's "repetitive outputs" (keye.md 4.8), stats first.

`repetition_stats` measures a generated text (stored in `Sample.scores` on kept and rejected rows
alike); `repetition_verdict` turns the stats into a reason under `mixture.builders.repetition`:

    gen_dup_ngram_ratio     share of word n-grams that repeat an earlier one (a looping model
                            repeats whole phrases; prose stays low)
    gen_compression_ratio   bytes / zlib-compressed bytes (loops compress far better than prose)
    gen_unclosed_tags       tags opened and never closed (<think> without </think>, \\boxed{ without
                            its brace): the model stopped in the middle, usually at max_new_tokens
"""
from __future__ import annotations

import zlib
from typing import Optional

from filters.text import dup_ngram_ratio
from mixture.verify import boxed_contents
from schemas.config import RepetitionConfig
from schemas.reasons import Reason

_TAGS = ("think", "answer", "analysis", "sandbox_output")


def unclosed_tags(text: str) -> int:
    """Tags opened more often than closed, \\boxed{ never closed, and an odd ``` fence."""
    tags = sum(max(0, text.count(f"<{t}>") - text.count(f"</{t}>")) for t in _TAGS)
    return tags + sum(c is None for c in boxed_contents(text)) + text.count("```") % 2


def repetition_stats(text: str, ngram: int) -> dict[str, float]:
    data = text.encode("utf-8")
    return {
        "gen_dup_ngram_ratio": dup_ngram_ratio(text.split(), ngram),
        "gen_compression_ratio": len(data) / len(zlib.compress(data, 9)) if data else 0.0,
        "gen_unclosed_tags": float(unclosed_tags(text)),
    }


def repetition_verdict(stats: dict[str, float], words: int, cfg: RepetitionConfig) -> Optional[tuple[Reason, str]]:
    if stats["gen_unclosed_tags"]:
        return Reason.REPETITIVE_GENERATION, f"{stats['gen_unclosed_tags']:.0f} unterminated tag(s)"
    if words < cfg.min_words:
        return None
    if stats["gen_dup_ngram_ratio"] > cfg.max_dup_ngram_ratio:
        return Reason.REPETITIVE_GENERATION, (f"repeated {cfg.ngram}-gram ratio {stats['gen_dup_ngram_ratio']:.3f}"
                                              f" > {cfg.max_dup_ngram_ratio}")
    if stats["gen_compression_ratio"] > cfg.max_compression_ratio:
        return Reason.REPETITIVE_GENERATION, (f"compression ratio {stats['gen_compression_ratio']:.2f} > "
                                              f"{cfg.max_compression_ratio}")
    return None


def check_text(text: str, cfg: RepetitionConfig) -> tuple[dict[str, float], Optional[tuple[Reason, str]]]:
    stats = repetition_stats(text, cfg.ngram)
    return stats, repetition_verdict(stats, len(text.split()), cfg)
