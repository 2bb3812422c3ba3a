"""The cold-start mixture's output formats (keye.md sections 4.2 and 8), and the validator every row passes.

    mode            suffix on the last user turn    the last assistant turn
    no_think        /no_think                      the plain answer: no <think>, <answer>, <analysis> tags
    think           /think                         <think>\\n...\\n</think>\\n<answer>\\n... \\boxed{X}\\n</answer>
    auto_think      none (or a configured one,     <analysis>\\n... therefore /think (or /no_think) mode is more
                    e.g. /auto_think)              appropriate.\\n</analysis>\\n then that mode's format
    agentic_think   /agentic_think                 <think>\\nreasoning\\n```python\\ncode\\n```\\n<sandbox_output>IMAGE
                                                   </sandbox_output>\\nmore reasoning\\n</think>\\n<answer>...</answer>

IMAGE is a media part of the assistant turn (the image the code produced, a media item of the row
with its own visual tokens); videos use the think and no_think formats. `\\boxed{}` holds the
final answer where the task has a closed-form one (a number, a choice letter, a short phrase).
Earlier assistant turns of a multi-turn row are plain: Keye's template strips their reasoning.

The validator reads each turn as `keye.chat.message_body` renders it, so what it checks is what
the trainer sees, whichever way a trace is stored (`Message.reasoning` or inline tags).
"""
from __future__ import annotations

import re
from typing import Optional

from keye.chat import IMAGE, message_body
from mixture.verify import boxed_contents
from schemas.sample import MODES, ContentPart, Sample

MODE_SUFFIX = {"think": "/think", "no_think": "/no_think", "agentic_think": "/agentic_think"}
KNOWN_SUFFIXES = ("/think", "/no_think", "/agentic_think", "/auto_think")
# the mode each mixture category's rows are in
CATEGORY_MODE = {"non_thinking": "no_think", "thinking": "think", "auto_think": "auto_think",
                 "think_with_image": "agentic_think", "video_think": "think", "video_no_think": "no_think"}
TAGS = ("think", "answer", "analysis", "sandbox_output")
_TAG_RE = re.compile(r"</?(?:%s)>" % "|".join(TAGS))
_THINK_RE = re.compile(r"<think>\n(?P<reasoning>.+?)\n</think>\n+<answer>\n(?P<answer>.+?)\n</answer>", re.S)
_ANALYSIS_RE = re.compile(r"<analysis>\n(?P<analysis>.+?)\n</analysis>\n(?P<rest>.+)", re.S)
_CODE_RE = re.compile(r"```python\n(?P<code>.+?)\n```", re.S)
_SANDBOX = f"<sandbox_output>{IMAGE}</sandbox_output>"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:[.,]\d+)?|\d*\.\d+)(?:/\d+)?%?$")
_CHOICE = re.compile(r"^\(?([A-Ha-h])\)?[.):]?$")


# --- writing ---------------------------------------------------------------------------------
def suffix_of(mode: str, auto_suffix: Optional[str]) -> Optional[str]:
    return auto_suffix if mode == "auto_think" else MODE_SUFFIX[mode]


def strip_suffix(text: str) -> str:
    """The text without a trailing mode suffix (a source row may carry one already)."""
    stripped = text.rstrip()
    for s in KNOWN_SUFFIXES:
        if stripped.endswith(s):
            return stripped[: -len(s)].rstrip()
    return stripped


def with_suffix(text: str, mode: str, auto_suffix: Optional[str]) -> str:
    suffix = suffix_of(mode, auto_suffix)
    base = strip_suffix(text)
    return f"{base} {suffix}" if suffix else base


def closed_form(answer: str, max_words: int) -> Optional[str]:
    """What goes in `\\boxed{}` for this reference answer: a number, a choice letter or a short
    phrase (at most max_words words), without trailing punctuation; None for a free-form answer."""
    text = answer.strip().rstrip(".!").strip()
    if not text or "\n" in text or "{" in text or "}" in text:
        return None
    if _NUMBER.match(text.replace(" ", "")):
        return text.replace(" ", "")
    m = _CHOICE.match(text)
    if m:
        return m.group(1).upper()
    return text if len(text.split()) <= max_words else None


def answer_text(answer: str, boxed: Optional[str]) -> str:
    answer = answer.strip()
    if boxed is None or "\\boxed{" in answer:
        return answer
    stop = "" if answer.endswith((".", "!", "?")) else "."
    return f"{answer}{stop} The final answer is \\boxed{{{boxed}}}."


def thinking(reasoning: str, answer: str, boxed: Optional[str]) -> str:
    """The think format: `<think>` reasoning, then the answer (boxed where closed-form) in `<answer>`."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n{answer_text(answer, boxed)}\n</answer>"


def analysis_block(analysis: str) -> str:
    return f"<analysis>\n{analysis.strip()}\n</analysis>\n"


def mode_sentence(mode: str) -> str:
    """The closing sentence of an auto-think analysis (Keye-VL's wording)."""
    return f"Therefore /{mode} mode is more appropriate."


def chosen_mode(analysis: str) -> Optional[str]:
    """The mode the analysis' last sentence chooses ("think" or "no_think"), or None when it
    names neither or both."""
    sentences = [s for s in _SENTENCE_END.split(analysis.strip()) if s]
    if not sentences:
        return None
    last = sentences[-1]
    named = {m for m in ("think", "no_think") if re.search(rf"(?<![\w/])/{m}\b", last)}
    return named.pop() if len(named) == 1 else None


def think_with_image_parts(before: str, code: str, image_index: int, after: str, answer: str,
                           boxed: Optional[str]) -> list[ContentPart]:
    """The agentic assistant turn as content parts: the produced image is a media part inside `<think>`."""
    head = f"<think>\n{before.strip()}\n```python\n{code.strip()}\n```\n<sandbox_output>"
    tail = f"</sandbox_output>\n{after.strip()}\n</think>\n<answer>\n{answer_text(answer, boxed)}\n</answer>"
    return [ContentPart("text", text=head), ContentPart("image", media_index=image_index),
            ContentPart("text", text=tail)]


# --- checking --------------------------------------------------------------------------------
def format_error(sample: Sample, auto_suffix: Optional[str]) -> Optional[str]:
    """Why the row breaks its mode's format, or None when it is well formed."""
    if sample.mode not in MODES:
        return f"mode {sample.mode!r} is not one of {MODES}"
    msgs = sample.messages
    if not msgs or msgs[-1].role != "assistant":
        return "the last turn is not an assistant turn"
    users = [i for i, m in enumerate(msgs) if m.role == "user"]
    if not users:
        return "no user turn"
    last_user = msgs[users[-1]]
    texts = [p.text for p in last_user.content if p.type == "text" and p.text]
    if not texts:
        return "the last user turn has no text for the mode suffix"
    err = _suffix_error(texts[-1], sample.mode, auto_suffix)
    if err:
        return err
    for i, m in enumerate(msgs[:-1]):
        if m.role == "assistant" and (m.reasoning or _TAG_RE.search(message_body(m, sample.media))):
            return f"messages[{i}]: an earlier assistant turn carries reasoning or tags"
    for i in users:
        if any(p.type == "text" and p.text and _TAG_RE.search(p.text) for p in msgs[i].content):
            return f"messages[{i}]: a user turn holds a format tag"
    body = message_body(msgs[-1], sample.media)
    if None in boxed_contents(body):
        return "unbalanced \\boxed{"
    if sample.mode == "no_think":
        return _plain_error(body)
    if sample.mode == "think":
        return _think_error(body, agentic=False)
    if sample.mode == "agentic_think":
        return _think_error(body, agentic=True) or _sandbox_image_error(sample)
    m = _ANALYSIS_RE.fullmatch(body)
    if not m or body.count("<analysis>") != 1 or body.count("</analysis>") != 1:
        return "auto_think: expected <analysis>\\n...\\n</analysis>\\n then the chosen mode's format"
    chosen = chosen_mode(m.group("analysis"))
    if chosen is None:
        return "auto_think: the analysis' last sentence chooses neither /think nor /no_think (or both)"
    rest = m.group("rest")
    return _plain_error(rest) if chosen == "no_think" else _think_error(rest, agentic=False)


def _suffix_error(text: str, mode: str, auto_suffix: Optional[str]) -> Optional[str]:
    want = suffix_of(mode, auto_suffix)
    stripped = text.rstrip()
    if want is None:
        bad = next((s for s in KNOWN_SUFFIXES if stripped.endswith(s)), None)
        return f"auto_think without a suffix, but the user turn ends in {bad}" if bad else None
    if not stripped.endswith(" " + want) and stripped != want:
        return f"the last user turn does not end in {want}"
    return None


def _plain_error(body: str) -> Optional[str]:
    if not body.strip():
        return "empty answer"
    tag = _TAG_RE.search(body)
    return f"a plain answer holds {tag.group(0)}" if tag else None


def _think_error(body: str, agentic: bool) -> Optional[str]:
    m = _THINK_RE.fullmatch(body)
    if not m:
        return "expected <think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>"
    want = {"think": 1, "answer": 1, "analysis": 0, "sandbox_output": None if agentic else 0}
    for tag in TAGS:      # None: one or more (an agentic trace may run several operations)
        opened, closed = body.count(f"<{tag}>"), body.count(f"</{tag}>")
        if opened != closed or (opened != want[tag] if want[tag] is not None else opened < 1):
            return f"<{tag}> appears {opened} times and </{tag}> {closed} times"
    if "\\boxed{" in m.group("reasoning") and "\\boxed{" not in m.group("answer"):
        return "\\boxed{} in the reasoning but not in the answer"
    if not agentic:
        return None
    reasoning = m.group("reasoning")
    code = _CODE_RE.search(reasoning)
    if not code:
        return "agentic_think: no ```python code block inside <think>"
    before, rest = reasoning[:code.start()], reasoning[code.end():]
    if not before.strip():
        return "agentic_think: no reasoning before the code"
    if not rest.startswith("\n" + _SANDBOX):
        return "agentic_think: the code is not followed by <sandbox_output> holding the produced image"
    after = rest[len(_SANDBOX) + 1:]
    if _SANDBOX in after and not after.split(_SANDBOX)[-1].strip():
        return "agentic_think: no reasoning after the last <sandbox_output>"
    if not after.strip():
        return "agentic_think: no reasoning after <sandbox_output>"
    return None


def _sandbox_image_error(sample: Sample) -> Optional[str]:
    """The images inside the agentic turn are produced images: never shown in a user turn."""
    assistant = {p.media_index for p in sample.messages[-1].content if p.type == "image"}
    shown = {p.media_index for m in sample.messages[:-1] for p in m.content if p.type in ("image", "video")}
    if not assistant:
        return "agentic_think: no produced image in the assistant turn"
    if assistant & shown:
        return "agentic_think: a produced image is also shown in an earlier turn"
    if any(i is None or i >= len(sample.media) or sample.media[i].kind != "image" for i in assistant):
        return "agentic_think: a produced image part points at no image media item"
    return None
