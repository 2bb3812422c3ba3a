"""Trainer layouts for kept rows, Beam-free: one row (and its WebDataset members) in, one JSONL
record and the media files it names out.

- `swift` (ms-swift's standard dataset format): `{"messages": [{"role", "content"}...],
  "images": [...], "videos": [...]}`; each image or video of a turn is an `<image>` / `<video>`
  tag in its content, in order, and the lists hold their paths in the same order.
- `llava` (LLaVA / LLaVA-NeXT): `{"id", "image": [...], "video": ..., "conversations":
  [{"from": "human"|"gpt", "value"}...]}` with the same tags; a system turn goes to `"system"`.
  `image` is always a list (LLaVA-NeXT's multi-image form) so the column has one type; `video`
  is one path (a row with several videos cannot be written in this layout and is counted).

An assistant's reasoning trace is written in front of its answer as Keye's template renders it
(`<think>\\n...\\n</think>\\n\\n`), so both layouts carry the mode formats unchanged. Images are
written as files (`media/<id>/<item>.<ext>`); a video kept as sampled frames becomes a folder of
its frames (`media/<id>/<item>/<frame>.jpg`), which ms-swift (`videos` as an image folder) and
LLaVA-NeXT (a frame folder) both read; a video kept as its original bytes is written as a file.
Paths are relative to the export folder, so the export does not depend on where it lies.
"""
from __future__ import annotations

import posixpath
from typing import Any, Optional

from keye.chat import with_reasoning
from schemas.sample import MediaItem, Sample

FORMATS = ("swift", "llava")
TAGS = {"image": "<image>", "video": "<video>"}
LLAVA_ROLES = {"user": "human", "assistant": "gpt"}


def datasets_features(fmt: str):
    """The layout as `datasets.Features`: pass it to `load_dataset("json", data_files=..., features=...)`,
    since LLaVA records leave out the keys they do not use (`image`, `video`, `system`) and parts
    without one would otherwise disagree on columns."""
    from datasets import Features, Sequence, Value

    if fmt == "swift":
        return Features({"messages": [{"role": Value("string"), "content": Value("string")}],
                         "images": Sequence(Value("string")), "videos": Sequence(Value("string"))})
    return Features({"id": Value("string"), "system": Value("string"), "image": Sequence(Value("string")),
                     "video": Value("string"),
                     "conversations": [{"from": Value("string"), "value": Value("string")}]})


def media_files(sample: Sample, members: dict[str, bytes]) -> tuple[list[str], dict[str, bytes]]:
    """(one relative path per media item, {relative path: bytes} to write)."""
    paths, files = [], {}
    for i, item in enumerate(sample.media):
        base = f"media/{sample.id}/{i}"
        if _is_frames(item):
            for j, name in enumerate(item.members):
                files[f"{base}/{j:03d}{_ext(name)}"] = members[name]
            paths.append(base)
        else:
            name = item.members[0]
            files[base + _ext(name)] = members[name]
            paths.append(base + _ext(name))
    return paths, files


def _is_frames(item: MediaItem) -> bool:
    return item.kind == "video" and not (item.source_member and item.members == [item.source_member])


def _ext(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def _turns(sample: Sample) -> list[tuple[str, str, list[int]]]:
    """(role, text with media tags, media indexes in order) per message."""
    out = []
    for m in sample.messages:
        body, used = [], []
        for p in m.content:
            if p.type == "text":
                body.append(p.text or "")
            else:     # "<image>\n" before a question (LLaVA's habit); bare inside an answer (<sandbox_output>)
                body.append(TAGS[p.type] + ("\n" if m.role == "user" else ""))
                used.append(p.media_index)
        out.append((m.role, with_reasoning(m, "".join(body)), used))
    return out


def export_row(sample: Sample, members: dict[str, bytes],
               fmt: str) -> tuple[Optional[dict[str, Any]], dict[str, bytes]]:
    """The row in trainer layout `fmt` and the media files it refers to; (None, {}) when the layout
    cannot hold the row (LLaVA: more than one video)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} ({', '.join(FORMATS)})")
    paths, files = media_files(sample, members)
    turns = _turns(sample)
    order = [i for _, _, used in turns for i in used]
    images = [paths[i] for i in order if sample.media[i].kind == "image"]
    videos = [paths[i] for i in order if sample.media[i].kind == "video"]
    if fmt == "swift":
        record = {"messages": [{"role": role, "content": text} for role, text, _ in turns],
                  "images": images, "videos": videos}
        return record, files
    record: dict[str, Any] = {"id": sample.id}
    system = [text for role, text, _ in turns if role == "system"]
    if system:
        record["system"] = system[0]
    if images:
        record["image"] = images
    if len(videos) > 1:
        return None, {}          # LLaVA names one video per sample: the caller counts the row as skipped
    if videos:
        record["video"] = videos[0]
    record["conversations"] = [{"from": LLAVA_ROLES[role], "value": text} for role, text, _ in turns
                               if role != "system"]
    return record, files
