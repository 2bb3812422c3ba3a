"""Is a generated answer the reference answer? Rules first, an optional judge model last.

    extract_answer(text)     what the generation answers: after </analysis> and </think>, inside
                             <answer>...</answer> when present, the last \\boxed{...} when present
                             (Keye's eval post-processing), else an "Answer: ..." line, else the text
    AnswerVerifier.verify    in order: multiple-choice letter (the reference is a letter), numbers
                             (numeric tolerance; "3", "3.0", "three", "3/4", "75%"), normalised exact
                             match (case, articles, punctuation, "to the"), then the judge when one is
                             configured and the reference is free-form; else wrong

The judge is any callable (question, reference, candidate) -> bool | None (None: could not judge,
counted as wrong); `GeneratorJudge` asks the generator backend with a versioned prompt.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from schemas.config import VerifyConfig

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ARTICLES = re.compile(r"\b(a|an|the|to|of|is|it|are|there|answer|final)\b")
_PUNCT = re.compile(r"[^\w\s%./-]")
_CHOICE = re.compile(r"^\(?([A-H])\)?(?:[.):]|$|\s)")
_ANSWER_LINE = re.compile(r"(?im)^\s*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$")
_NUM = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?%?")

Judge = Callable[[str, str, str], Optional[bool]]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    method: str                 # choice | numeric | exact | judge | none
    predicted: str              # the extracted answer


def boxed_contents(text: str) -> list[Optional[str]]:
    """For each \\boxed{ in the text, its content up to the matching brace (None: never closed)."""
    out: list[Optional[str]] = []
    start = 0
    while (i := text.find("\\boxed{", start)) >= 0:
        depth, end = 0, None
        for j in range(i + len("\\boxed"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                end = j
                break
        out.append(None if end is None else text[i + len("\\boxed{"):end].strip())
        start = i + 1
    return out


def last_boxed(text: str) -> Optional[str]:
    """Content of the last closed \\boxed{...}, or None."""
    closed = [c for c in boxed_contents(text) if c is not None]
    return closed[-1] if closed else None


def extract_answer(text: str) -> str:
    for tag in ("</analysis>", "</think>"):
        if tag in text:
            text = text.rsplit(tag, 1)[1]
    m = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.S)
    if m:
        text = m.group(1)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    lines = _ANSWER_LINE.findall(text)
    return (lines[-1] if lines else text).strip()


def normalise(text: str) -> str:
    text = text.lower().replace("colour", "color").replace("grey", "gray")
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(re.sub(r"\.(?!\d)", " ", text).split())


def parse_number(text: str) -> Optional[float]:
    """The one number the text states (digits, a fraction, a percentage or a number word), else None."""
    t = text.strip().lower().rstrip(".")
    words = [w for w in re.findall(r"[a-z]+", t) if w in NUMBER_WORDS]
    nums = _NUM.findall(t)
    if len(nums) + len(words) != 1:
        return None
    if words:
        return float(NUMBER_WORDS[words[0]])
    n = nums[0].replace(",", "")
    scale = 0.01 if n.endswith("%") else 1.0
    n = n.rstrip("%")
    if "/" in n:
        a, b = n.split("/")
        return float(a) / float(b) * scale if float(b) else None
    return float(n) * scale


def choice_letter(text: str) -> Optional[str]:
    t = text.strip()
    m = _CHOICE.match(t) or re.search(r"(?i)\b(?:option|choice|answer)\s*(?:is\s*)?\(?([A-H])\)?\b", t)
    return m.group(1).upper() if m else None


class AnswerVerifier:
    def __init__(self, cfg: VerifyConfig, judge: Optional[Judge] = None) -> None:
        self.cfg = cfg
        self.judge = judge if cfg.judge else None

    def verify(self, generated: str, reference: str, question: str = "") -> Verdict:
        predicted = extract_answer(generated)
        ref = extract_answer(reference)
        if not predicted:
            return Verdict(False, "none", predicted)
        ref_letter = choice_letter(ref) if len(ref.strip().rstrip(".")) <= 3 else None
        if ref_letter is not None:
            return Verdict(choice_letter(predicted) == ref_letter, "choice", predicted)
        a, b = parse_number(predicted), parse_number(ref)
        if b is not None and len(normalise(ref).split()) == 1:      # the reference is just a number
            ok = a is not None and abs(a - b) <= max(self.cfg.numeric_abs_tol, self.cfg.numeric_rel_tol * abs(b))
            return Verdict(ok, "numeric", predicted)
        if normalise(predicted) == normalise(ref):
            return Verdict(True, "exact", predicted)
        if self.judge is not None:
            return Verdict(bool(self.judge(question, ref, predicted)), "judge", predicted)
        return Verdict(False, "exact", predicted)
