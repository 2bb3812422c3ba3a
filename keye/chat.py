"""Keye-VL's chat layout, and the exact token accounting that follows from it.

A sample is rendered the way Keye-VL's processor renders it: Qwen's `<|im_start|>role\n...
<|im_end|>\n` turns, a default system turn when the row has none, each image as
`<|vision_start|><|image_pad|><|vision_end|>`, and an assistant's reasoning trace as
`<think>\n...\n</think>\n\n` before its answer, as Keye's tokenizer template does.
Videos follow one of two layouts (`tokens.chat_layout`):

- `keye_preview`: `<|vision_start|><|video_pad|><|vision_end|>`; time is carried by mRoPE.
- `keye_1_5`: inside vision_start/end, per sampled frame `<|frame|>` + its timestamp as text
  with one decimal (of its float32 value, as Kwai's processor formats the float32 tensor
  keye-vl-utils returns: 0.15 s reads "0.2", 0.45 s "0.4"), then the frame's pads, wrapped in
  `<|fast_start|>...<|fast_end|>` for fast frames (KeyeVL1_5Processor's expansion, as in transformers' port).

Pads are rendered once per image, video (preview) or frame (1.5); the processor later expands
each to the item's (or frame's) visual tokens. Hence `text_tokens` = tokens of the rendered
string minus those single pads, and `visual_tokens` = the sum of the items' visual tokens;
their sum is the sequence length.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from keye.tokenizer import TokenCounter
from schemas.sample import MediaItem, Message

LAYOUTS = ("keye_preview", "keye_1_5")
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_PREVIEW = "<|vision_start|><|video_pad|><|vision_end|>"


def frame_timestamp_text(ts: float) -> str:
    """A frame's timestamp as Keye-VL 1.5 writes it: keye-vl-utils hands the processor a float32
    tensor, and the processor formats each element with ".1f", so the float32 value is what
    rounds. Formatting the float64 seconds instead differs at every x.x5 s frame (60 fps video:
    one frame in twenty)."""
    return format(float(np.float32(ts)), ".1f")


def media_placeholder(item: MediaItem, layout: str) -> tuple[str, int]:
    """(text for one media item, number of single pads in it)."""
    if item.kind == "image":
        return IMAGE, 1
    if layout == "keye_preview" or not item.frame_timestamps:
        return VIDEO_PREVIEW, 1
    types = item.frame_types or [0] * len(item.frame_timestamps)
    frames = "".join("<|frame|>" + frame_timestamp_text(ts)
                     + ("<|video_pad|>" if t == 0 else "<|fast_start|><|video_pad|><|fast_end|>")
                     for ts, t in zip(item.frame_timestamps, types))
    return f"<|vision_start|>{frames}<|vision_end|>", len(item.frame_timestamps)


def render_chat(messages: Sequence[Message], media: Sequence[MediaItem],
                system_prompt: Optional[str], layout: str = "keye_preview") -> str:
    """The sample as the model's text stream, one pad token per image, video or frame."""
    return _render(messages, media, system_prompt, layout)[0]


def render_with_targets(messages: Sequence[Message], media: Sequence[MediaItem], system_prompt: Optional[str],
                        layout: str = "keye_preview") -> tuple[str, list[tuple[int, int]]]:
    """The rendered sample and the character spans the model is trained to produce: each
    assistant turn's body (reasoning included) through its `<|im_end|>` (the trainer's labels)."""
    text, _, targets = _render(messages, media, system_prompt, layout, with_targets=True)
    return text, targets


def _render(messages, media, system_prompt, layout, with_targets: bool = False):
    if layout not in LAYOUTS:
        raise ValueError(f"unknown chat layout {layout!r} ({', '.join(LAYOUTS)})")
    out, pads, targets, at = [], 0, [], 0
    if system_prompt is not None and (not messages or messages[0].role != "system"):
        out.append(f"<|im_start|>system\n{system_prompt}<|im_end|>\n")
        at = len(out[0])
    for m in messages:
        text, n = _body(m, media, layout)
        pads += n
        turn = f"<|im_start|>{m.role}\n{text}<|im_end|>\n"
        if m.role == "assistant":
            head = len(f"<|im_start|>{m.role}\n")
            targets.append((at + head, at + len(turn) - 1))
        out.append(turn)
        at += len(turn)
    if with_targets:
        return "".join(out), pads, targets
    return "".join(out), pads


def message_body(message: Message, media: Sequence[MediaItem], layout: str = "keye_preview") -> str:
    """One turn's text as the model sees it between `<|im_start|>role\n` and `<|im_end|>`: media
    parts as their placeholders (an assistant's think-with-image output holds the produced image's),
    a reasoning trace as `<think>`. The mixture's format validator checks exactly this text."""
    return _body(message, media, layout)[0]


def _body(m: Message, media, layout) -> tuple[str, int]:
    body, pads = [], 0
    for p in m.content:
        if p.type == "text":
            body.append(p.text or "")
        else:
            text, n = media_placeholder(media[p.media_index], layout)
            body.append(text)
            pads += n
    return with_reasoning(m, "".join(body)), pads


def with_reasoning(message: Message, text: str) -> str:
    """An assistant turn's text with its reasoning trace in front, as Keye's template renders it."""
    if message.role == "assistant" and message.reasoning:
        return f"<think>\n{message.reasoning.strip(chr(10))}\n</think>\n\n{text.lstrip(chr(10))}"
    return text


def count_tokens(messages: Sequence[Message], media: Sequence[MediaItem], tokenizer: TokenCounter,
                 system_prompt: Optional[str], layout: str = "keye_preview") -> tuple[int, int]:
    """(text_tokens, visual_tokens) of a sample, exactly as the trainer will see it."""
    rendered, pads = _render(messages, media, system_prompt, layout)
    text_tokens = tokenizer.count(rendered) - pads
    visual_tokens = sum(item.visual_tokens for item in media)
    return text_tokens, visual_tokens
