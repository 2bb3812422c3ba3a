"""Keye-VL's chat layout, and the exact token accounting that follows from it.

A sample is rendered the way Keye-VL's processor renders it: Qwen's `<|im_start|>role\\n...
<|im_end|>\\n` turns, a default system turn when the row has none, each image as
`<|vision_start|><|image_pad|><|vision_end|>` and each video as
`<|vision_start|><|video_pad|><|vision_end|>`, with a single pad that the processor later
expands to the item's visual tokens. An assistant's reasoning trace is rendered as
`<think>\\n...\\n</think>\\n\\n` before its answer, as Keye's tokenizer template does.

Hence `text_tokens` = tokens of the rendered string minus one pad per media item, and
`visual_tokens` = the sum of the items' visual tokens; their sum is the sequence length.
"""
from __future__ import annotations

from typing import Optional, Sequence

from keye.tokenizer import TokenCounter
from schemas.sample import MediaItem, Message

PLACEHOLDERS = {
    "image": "<|vision_start|><|image_pad|><|vision_end|>",
    "video": "<|vision_start|><|video_pad|><|vision_end|>",
}


def render_chat(messages: Sequence[Message], media: Sequence[MediaItem],
                system_prompt: Optional[str]) -> str:
    """The sample as the model's text stream, one pad token per media item."""
    out = []
    if system_prompt is not None and (not messages or messages[0].role != "system"):
        out.append(f"<|im_start|>system\n{system_prompt}<|im_end|>\n")
    for m in messages:
        body = "".join((p.text or "") if p.type == "text" else PLACEHOLDERS[media[p.media_index].kind]
                       for p in m.content)
        if m.role == "assistant" and m.reasoning:
            body = f"<think>\n{m.reasoning.strip(chr(10))}\n</think>\n\n{body.lstrip(chr(10))}"
        out.append(f"<|im_start|>{m.role}\n{body}<|im_end|>\n")
    return "".join(out)


def count_tokens(messages: Sequence[Message], media: Sequence[MediaItem],
                 tokenizer: TokenCounter, system_prompt: Optional[str]) -> tuple[int, int]:
    """(text_tokens, visual_tokens) of a sample, exactly as the trainer will see it."""
    placeholders = sum(1 for m in messages for p in m.content if p.type != "text")
    text_tokens = tokenizer.count(render_chat(messages, media, system_prompt)) - placeholders
    visual_tokens = sum(item.visual_tokens for item in media)
    return text_tokens, visual_tokens
