"""One curated row -> the token ids, labels and visual slots the model trains on.

The row is rendered with Keye's chat layout (keye/chat.py, the layout and system prompt its
output folder's manifest recorded), tokenised, and each single pad is expanded to the visual
tokens of its image, video (keye_preview) or frame (keye_1_5):

    rendered text ─tokenise─▶ ids with one pad per image / video / frame
                  ─expand──▶ ids with (h/28)(w/28) pads per frame  == text_tokens + visual_tokens

The expanded length must equal the row's stored `text_tokens + visual_tokens` (the numbers the
packer used); a mismatch raises `TemplateMismatch` naming the row: never a silent truncation.
Labels are the token ids inside assistant turns (body through `<|im_end|>`), -100 elsewhere.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Optional

from keye.chat import render_with_targets
from keye.tokenizer import KEYE_SPECIAL_TOKENS, TokenCounter
from schemas.sample import MediaItem, Sample

IGNORE = -100
PAD_TOKENS = ("<|image_pad|>", "<|video_pad|>")


class TemplateMismatch(ValueError):
    """A row whose rendered length differs from its stored token counts."""


@dataclass
class Frame:
    """One picture the vision encoder sees: a member of the row's tar at the model's size."""

    member: str
    height: int
    width: int

    def tokens(self, unit: int) -> int:
        return (self.height // unit) * (self.width // unit)


@dataclass
class Encoded:
    sample_id: str
    input_ids: list[int]
    labels: list[int]
    frames: list[Frame] = field(default_factory=list)   # in the order their tokens appear

    def __len__(self) -> int:
        return len(self.input_ids)


def special_id(tokenizer: TokenCounter, token: str) -> int:
    if hasattr(tokenizer, "token_id"):
        return tokenizer.token_id(token)
    return KEYE_SPECIAL_TOKENS[token]


def item_frames(item: MediaItem) -> list[Frame]:
    """The pictures of one media item with their model sizes (slow / fast frames of a video)."""
    if item.kind == "image":
        return [Frame(item.members[0], item.height, item.width)]
    types = item.frame_types or [0] * len(item.members)
    return [Frame(m, item.fast_height, item.fast_width) if t == 1 and item.fast_height else
            Frame(m, item.height, item.width) for m, t in zip(item.members, types)]


def pad_slots(sample: Sample, layout: str) -> list[list[Frame]]:
    """The frames behind each single pad of the rendered row, in text order: one image, one whole
    video (keye_preview), or one frame (keye_1_5)."""
    slots = []
    for m in sample.messages:
        for p in m.content:
            if p.type == "text":
                continue
            item = sample.media[p.media_index]
            frames = item_frames(item)
            if item.kind == "video" and layout == "keye_1_5" and item.frame_timestamps:
                slots.extend([f] for f in frames)
            else:
                slots.append(frames)
    return slots


def encode_sample(sample: Sample, tokenizer: TokenCounter, layout: str, system_prompt: Optional[str],
                  unit: int = 28, prompt_only: bool = False) -> Encoded:
    """Ids, labels and frames of a row; `prompt_only` renders the conversation up to the last
    assistant turn and opens it (`<|im_start|>assistant\\n`): what generation is given."""
    messages = sample.messages
    if prompt_only:
        last = max(i for i, m in enumerate(messages) if m.role != "assistant") if messages else -1
        messages = messages[:last + 1]
    text, targets = render_with_targets(messages, sample.media, system_prompt, layout)
    if prompt_only:
        text += "<|im_start|>assistant\n"
    ids, offsets = tokenizer.encode_with_offsets(text)
    if unicodedata.normalize("NFC", text) != text:   # offsets index the normalised text
        targets = [(len(unicodedata.normalize("NFC", text[:a])), len(unicodedata.normalize("NFC", text[:b])))
                   for a, b in targets]
    pads = {special_id(tokenizer, t) for t in PAD_TOKENS}
    slots = pad_slots(sample, layout)
    out_ids, labels, frames, k, spans = [], [], [], 0, iter(targets)
    span = next(spans, None)
    for tok, start in zip(ids, offsets):
        while span is not None and start >= span[1]:
            span = next(spans, None)
        inside = span is not None and span[0] <= start < span[1]
        if tok in pads:
            if k >= len(slots):
                raise TemplateMismatch(f"row {sample.id}: more pads in the rendered text than media slots")
            n = sum(f.tokens(unit) for f in slots[k])
            frames.extend(slots[k])
            out_ids.extend([tok] * n)
            labels.extend([IGNORE] * n)
            k += 1
            continue
        out_ids.append(tok)
        labels.append(tok if inside else IGNORE)
    if not prompt_only:
        stored = sample.text_tokens + sample.visual_tokens
        if k != len(slots) or len(out_ids) != stored:
            raise TemplateMismatch(
                f"row {sample.id} ({sample.source} {sample.source_ref}): rendered {len(out_ids)} tokens "
                f"({k} of {len(slots)} media slots) with layout {layout}, but the row stores text_tokens "
                f"{sample.text_tokens} + visual_tokens {sample.visual_tokens} = {stored}")
        for item in sample.media:
            got = sum(f.tokens(unit) for f in item_frames(item))
            if got != item.visual_tokens:
                raise TemplateMismatch(f"row {sample.id}: a {item.kind}'s frames give {got} visual tokens, "
                                       f"the row stores {item.visual_tokens}")
    return Encoded(sample.id, out_ids, labels, frames)
