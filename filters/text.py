"""Text normalisation and text filters: compute stats, store them, then decide by threshold.

`normalize_text` is the one place text is rewritten. `text_stats` measures; `text_verdict`
turns stats into a rejection reason using the thresholds of the `text` recipe section.
Both are pure functions of their inputs; the pipeline stores the stats in `Sample.scores`
whether the row passes or not.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Optional

from filters.base import StepResult, reject_sample
from schemas.config import Config, TextConfig
from schemas.reasons import Reason, Stage
from schemas.sample import Sample

# C0 and C1 controls except tab and newline; also lone surrogates and the BOM.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ud800-\udfff]")
_SPACES_RE = re.compile("[ \u00a0\u2000-\u200a\u3000]{2,}")
# Whitespace (what `\s` and `str.isspace` match; all below U+3001) and invisible format
# characters (zero-width space, word joiner), stripped from either end. `str.strip` is linear;
# an anchored regex alternative is quadratic in a long whitespace run inside the text.
_EDGE_CHARS = "".join(chr(c) for c in range(0x3001) if chr(c).isspace()) + "\u200b\u2060"


def normalize_text(text: str, cfg: TextConfig) -> str:
    """Unicode form, line endings, control characters and (optionally) space runs."""
    if cfg.unicode_form != "none":
        text = unicodedata.normalize(cfg.unicode_form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if cfg.strip_control_chars:
        text = _CONTROL_RE.sub("", text)
    if cfg.collapse_spaces:
        text = _SPACES_RE.sub(" ", text)
    return text.strip(_EDGE_CHARS)


def normalize_sample(sample: Sample, cfg: TextConfig) -> bool:
    """Normalise every text of the sample in place; True if anything changed."""
    changed = False
    for m in sample.messages:
        if m.reasoning is not None:
            new = normalize_text(m.reasoning, cfg)
            changed |= new != m.reasoning
            m.reasoning = new or None
        kept = []
        for p in m.content:
            if p.type == "text":
                new = normalize_text(p.text or "", cfg)
                changed |= new != p.text
                if not new:
                    continue      # an empty text part carries nothing
                p.text = new
            kept.append(p)
        m.content = kept
    return changed


def dup_ngram_ratio(words: list[str], ngram: int) -> float:
    """Share of word n-grams that repeat an earlier one (0: none, or too few words for one n-gram)."""
    grams = [tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]
    return (1.0 - len(set(grams)) / len(grams)) if grams else 0.0


def text_stats(texts: list[str], ngram: int) -> dict[str, float]:
    joined = "\n".join(texts)
    words = joined.split()
    lines = [ln.strip() for ln in joined.split("\n") if ln.strip()]
    return {
        "text_chars": float(len(joined)) if texts else 0.0,
        "text_words": float(len(words)),
        "text_dup_ngram_ratio": dup_ngram_ratio(words, ngram),
        "text_dup_line_ratio": (1.0 - len(set(lines)) / len(lines)) if lines else 0.0,
    }


def empty_turn(sample: Sample) -> Optional[str]:
    """The first turn that must hold text but does not: an assistant turn, or a text-only row."""
    for i, m in enumerate(sample.messages):
        has_text = any(p.type == "text" and p.text for p in m.content)
        if m.role == "assistant" and not has_text:
            return f"messages[{i}] (assistant) has no text"
        if not m.content and not m.reasoning:
            return f"messages[{i}] ({m.role}) is empty"
    return None


def text_verdict(stats: dict[str, float], cfg: TextConfig,
                 empty: Optional[str] = None) -> Optional[tuple[Reason, str]]:
    """The rejection reason for these stats under the recipe's thresholds, or None to keep."""
    if empty is not None or stats["text_chars"] == 0:
        return Reason.EMPTY_TEXT, empty or "no text after normalisation"
    if stats["text_chars"] < cfg.min_chars:
        return Reason.TEXT_TOO_SHORT, f"{stats['text_chars']:.0f} chars < {cfg.min_chars}"
    if stats["text_chars"] > cfg.max_chars:
        return Reason.TEXT_TOO_LONG, f"{stats['text_chars']:.0f} chars > {cfg.max_chars}"
    if stats["text_words"] >= cfg.min_words_for_repetition:
        if stats["text_dup_ngram_ratio"] > cfg.max_dup_ngram_ratio:
            return Reason.REPETITIVE_TEXT, (f"duplicate {cfg.repetition_ngram}-gram ratio "
                                            f"{stats['text_dup_ngram_ratio']:.3f} > {cfg.max_dup_ngram_ratio}")
        if stats["text_dup_line_ratio"] > cfg.max_dup_line_ratio:
            return Reason.REPETITIVE_TEXT, (f"duplicate line ratio {stats['text_dup_line_ratio']:.3f} "
                                            f"> {cfg.max_dup_line_ratio}")
    return None


class TextFilter:
    """The text stage as a step: normalise, measure, store the scores, decide."""

    stage = Stage.TEXT

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg.text

    def setup(self) -> None:
        pass

    def __call__(self, sample: Sample) -> StepResult:
        changed = normalize_sample(sample, self.cfg)
        stats = text_stats(sample.texts(), self.cfg.repetition_ngram)
        stats["text_changed_by_normalisation"] = 1.0 if changed else 0.0
        sample.scores.update(stats)
        verdict = text_verdict(stats, self.cfg, empty_turn(sample))
        if verdict is not None:
            return reject_sample(sample, self.stage, *verdict)
        return sample
