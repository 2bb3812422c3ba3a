"""`python -m trainer.motion_probe --checkpoint C --data OUT [--heldout DIR]`: does a model read motion?

    caption rows of videos whose first shape moves ("a red circle moves from left to right ...")
      ─ prompt + the caption up to "moves from" (teacher forcing) ─▶ the model's pick among
        left / right / top / bottom (the first words of the four directions)
      once with the frames in order, once with the same frames reversed (every shape then moves the
      other way; timestamps and sizes unchanged)

A model that reads motion picks the true word in order and its opposite reversed. One that answers
from single frames (colour, where a shape is) or from the language picks the same word both times,
whatever it scores. Run on the training clips (does it fit them?) and on held-out clips (does it
generalise?): caption F1 alone cannot tell a model that never fitted directions from one that
memorised its clips. Clips whose frames differ in size (Keye's fast frames) are skipped and counted.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch

FIRST_WORDS = ("left", "right", "top", "bottom")
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
# the caption of a clip whose first shape moves: "a red circle moves from left to right ..." (synthetic/language.py)
FIRST_MOVE = re.compile(r"^(an? \w+ (?:circle|square|triangle) moves from) (left|right|top|bottom) to ")


@dataclass
class ProbeClip:
    item: object            # schemas.sample.MediaItem of the video
    blobs: list[bytes]      # its stored frames, in the order of item.members
    caption: str


def caption_head(caption: str) -> Optional[tuple[str, str]]:
    """(the caption up to "moves from", the true first word) or None when its first shape does not move."""
    m = FIRST_MOVE.match(caption.strip())
    return (m.group(1), m.group(2)) if m else None


def row_clip(sample) -> Optional[ProbeClip]:
    """The probe clip of a video caption row (one user turn, one answer) whose first shape moves."""
    if len(sample.messages) != 2 or len(sample.media) != 1 or sample.media[0].kind != "video":
        return None
    caption = " ".join(p.text or "" for p in sample.messages[1].content).strip()
    if not caption_head(caption):
        return None
    return ProbeClip(sample.media[0], [sample.blobs[m] for m in sample.media[0].members], caption)


def word_ids(model, tokenizer) -> torch.Tensor:
    """The model's (local) ids of the four first words, each one token."""
    words = [tokenizer.encode(" " + w) for w in FIRST_WORDS]
    if any(len(w) != 1 for w in words):
        raise ValueError("the tokenizer splits a direction word; the probe reads one token")
    return model.to_local(torch.tensor([w[0] for w in words], device=model.visual_ids.device))


def choices(model, tokenizer, layout: str, system_prompt: Optional[str], clip: ProbeClip, head: str,
            local: torch.Tensor) -> Optional[tuple[str, str]]:
    """The model's first word after `head` with the frames in order and reversed; None when the frames
    differ in size."""
    from schemas.sample import ContentPart, Message, Sample
    from trainer.data import decode_frame
    from trainer.template import encode_sample

    sample = Sample(id="probe", source="motion_probe", source_ref="", task="caption", media=[clip.item],
                    messages=[Message("user", [ContentPart("video", media_index=0)])],
                    blobs=dict(zip(clip.item.members, clip.blobs)))
    enc = encode_sample(sample, tokenizer, layout, system_prompt, prompt_only=True)
    frames = [decode_frame(sample.blobs[f.member], f.height, f.width, sample.id) for f in enc.frames]
    if len({tuple(f.shape) for f in frames}) != 1:
        return None
    device = model.visual_ids.device
    ids = torch.tensor([enc.input_ids + tokenizer.encode(head)], device=device)
    n = ids.shape[1]
    picked = []
    with torch.inference_mode():
        for order in (frames, frames[::-1]):
            logits = model.logits(ids, torch.arange(n, device=device)[None], [[n]], [f.to(device) for f in order])
            picked.append(FIRST_WORDS[int(logits[0, -1, local].argmax())])
    return picked[0], picked[1]


def probe_model(model, tokenizer, layout: str, system_prompt: Optional[str], clips: Iterable[ProbeClip]) -> dict:
    """Shares of clips: the true word in order; its opposite reversed; the same word both ways."""
    truth, got, skipped = [], [], 0
    local = word_ids(model, tokenizer)
    for clip in clips:
        head = caption_head(clip.caption)
        if head is None:
            continue
        pair = choices(model, tokenizer, layout, system_prompt, clip, head[0], local)
        if pair is None:
            skipped += 1
            continue
        truth.append(head[1])
        got.append(pair)
    n = len(got)

    def share(k: int) -> float:
        return round(k / n, 4) if n else 0.0

    return {"clips": n, "skipped_mixed_sizes": skipped, "chance": round(1 / len(FIRST_WORDS), 4),
            "accuracy": share(sum(t == a for t, (a, _) in zip(truth, got))),
            "accuracy_reversed": share(sum(OPPOSITE[t] == b for t, (_, b) in zip(truth, got))),
            "flips_when_reversed": share(sum(b == OPPOSITE[a] for a, b in got)),
            "same_when_reversed": share(sum(a == b for a, b in got)),
            "picked": dict(sorted(collections.Counter(a for a, _ in got).items()))}


def training_clips(data: str, limit: int) -> list[ProbeClip]:
    """Up to `limit` video caption rows (one user turn, one answer) of a pipeline output folder."""
    from trainer.folders import OutputFolder, folder_samples

    out: list[ProbeClip] = []
    for sample in folder_samples(OutputFolder.open(data)):
        clip = row_clip(sample)
        if clip is not None:
            out.append(clip)
            if len(out) >= limit:
                break
    return out


def heldout_clips(gen, items: Sequence[dict]) -> list[ProbeClip]:
    """Held-out video files (trainer.evidence.heldout items) through the pipeline's media code."""
    out = []
    for it in items:
        if it["kind"] == "video" and caption_head(it["caption"]):
            with open(it["path"], "rb") as f:
                item, blobs = gen.process("video", f.read())
            out.append(ProbeClip(item, blobs, it["caption"]))
    return out


def probe(checkpoint: str, data: Optional[str], heldout: Sequence[dict] = (), limit: int = 96) -> dict:
    """The probe of one checkpoint on up to `limit` training clips of `data` and on `heldout` items."""
    from trainer.generate import Generator

    gen = Generator(checkpoint)
    out = {}
    if data:
        out["training"] = probe_model(gen.model, gen.tokenizer, gen.layout, gen.system_prompt,
                                      training_clips(data, limit))
    if heldout:
        out["heldout"] = probe_model(gen.model, gen.tokenizer, gen.layout, gen.system_prompt,
                                     heldout_clips(gen, heldout))
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.motion_probe", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, action="append", help="trainer checkpoint folder; repeatable")
    ap.add_argument("--data", help="the pipeline output folder it trained on (its video caption rows)")
    ap.add_argument("--heldout", help="a held-out corpus folder (trainer.evidence's WORK/heldout, seed 1)")
    ap.add_argument("--videos", type=int, default=48, help="held-out videos (as trainer.evidence --videos)")
    ap.add_argument("--limit", type=int, default=96, help="training clips to probe")
    args = ap.parse_args(argv)
    items: list[dict] = []
    if args.heldout:
        from trainer.evidence import heldout

        items = heldout(args.heldout, seed=1, images=120, videos=args.videos)   # evidence's defaults: reused
    print(json.dumps({c: probe(c, args.data, items, args.limit) for c in args.checkpoint}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
