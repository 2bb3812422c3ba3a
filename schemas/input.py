"""Input rows: the layouts we accept, and their normalisation into a `Sample`.

`normalize_row` never raises on bad data: it returns a `Sample` or an `Invalid(reason, detail)`.
Rows may come from JSONL, Parquet, a LLaVA-style JSON list, or a WebDataset tar; in every
format a row is a JSON object in one of these layouts:

1. The project's own layout (qwen-vl / keye-vl-utils messages)::

     {"id": "optional", "task": "vqa", "mode": null,
      "messages": [
        {"role": "user", "content": [{"type": "image", "image": "imgs/a.jpg"},
                                     {"type": "text", "text": "What colour is the circle?"}]},
        {"role": "assistant", "content": "Red.", "reasoning": "optional thinking trace"}]}

   `content` is a string or a list of parts; a part is {"type": "text", "text": ...},
   {"type": "image", "image": URI} or {"type": "video", "video": URI}.

2. Flat layouts, for the common cases::

     {"image": URI, "caption": "..."}                  caption pair (also "video", "images")
     {"image": URI, "question": "...", "answer": "...", "reasoning": "optional"}   QA
     {"text": "..."}                                     pure text

3. LLaVA style::

     {"id": "...", "image": "a.jpg" | "images": [...] | "video": "v.mp4",
      "conversations": [{"from": "human", "value": "<image>\\nWhat is it?"},
                        {"from": "gpt", "value": "A cat."}]}

   `<image>` / `<video>` markers place the media; without markers the media go before the
   first human turn (LLaVA's convention); a marker count that differs from the media given
   is `media_marker_mismatch`.

Optional keys in every layout: `id` (kept as `source_id`), `task` (else inferred), `mode`.
A video's speech transcript goes in `asr`: a key of the video part in the own layout
({"type": "video", "video": URI, "asr": "..."}), or a top-level key of a flat or LLaVA row
(a string for the row's one video, or a list with one entry per video).
Relative media URIs resolve against the manifest file's folder (or `ingest.media_root`);
`..` is normalised away (also in remote URIs), `file://` URIs become local paths. Each item
keeps its resolved `location` (in flight) and, as `uri`, that place relative to the input
root when it lies under it (outputs then do not depend on where the corpus sits). Which
locations may be read at all (`ingest.media_roots`) is decided in ingest/validate.py.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Optional, Union
from urllib.parse import unquote

from schemas.reasons import Reason
from schemas.sample import (MEDIA_KINDS, MODES, TASKS, ContentPart, MediaItem, Message,
                            Provenance, Sample, sample_id)
from schemas.strings import display_text

LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
               "system": "system"}
MARKER_RE = re.compile(r"<(image|video)>")
GROUNDING_TOKENS = ("<|box_start|>", "<|point_start|>", "<|quad_start|>", "<|object_ref_start|>")
READABLE_SCHEMES = ("gs://", "s3://", "hdfs://", "azfs://", "file://")
MEDIA_KEYS = ("image", "images", "video", "videos")


@dataclass(frozen=True)
class Invalid:
    reason: Reason
    detail: str


@dataclass(frozen=True)
class RowContext:
    """What normalisation needs besides the row itself."""

    source: str
    source_ref: str
    base_dir: str                   # folder that relative media paths resolve against
    max_field_chars: int
    max_media_per_row: int
    max_messages: int
    default_caption_prompt: Optional[str] = None
    pipeline_version: str = ""
    config_hash: str = ""
    inline_uris: frozenset = frozenset()   # URIs whose bytes came with the row (tar members)
    input_root: Optional[str] = None       # uris are stored relative to this folder; None: as resolved


class _Bad(Exception):
    def __init__(self, reason: Reason, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def normalize_row(payload: Any, ctx: RowContext) -> Union[Sample, Invalid]:
    """One input row to a Sample, or the reason it cannot be one."""
    try:
        return _normalize(payload, ctx)
    except _Bad as e:
        return Invalid(e.reason, e.detail)


# --- implementation -------------------------------------------------------------------------
def _normalize(payload: Any, ctx: RowContext) -> Sample:
    if not isinstance(payload, dict):
        raise _Bad(Reason.NOT_AN_OBJECT, f"row is a JSON {type(payload).__name__}, not an object")
    media: list[MediaItem] = []
    if "messages" in payload and payload["messages"] is not None:
        messages = _own_messages(payload["messages"], media, ctx)
    elif "conversations" in payload and payload["conversations"] is not None:
        messages = _llava_messages(payload, media, ctx)
    else:
        messages = _flat_messages(payload, media, ctx)
    if not messages:
        raise _Bad(Reason.MISSING_FIELD, "no messages")
    if len(messages) > ctx.max_messages:
        raise _Bad(Reason.TOO_MANY_MESSAGES, f"{len(messages)} messages, more than {ctx.max_messages}")
    if len(media) > ctx.max_media_per_row:
        raise _Bad(Reason.TOO_MANY_MEDIA, f"{len(media)} media items, more than {ctx.max_media_per_row}")
    if payload.get("asr") is not None:
        _attach_asr(payload["asr"], media, ctx)

    mode = _optional_str(payload, "mode")
    if mode is not None and mode not in MODES:
        raise _Bad(Reason.UNKNOWN_MODE, f"mode {mode!r} is not one of {MODES}")
    task = _optional_str(payload, "task")
    if task is not None and task not in TASKS:
        raise _Bad(Reason.UNKNOWN_TASK, f"task {task!r} is not one of {TASKS}")
    source_id = payload.get("id")
    if source_id is not None and (isinstance(source_id, bool) or not isinstance(source_id, (str, int))):
        raise _Bad(Reason.WRONG_TYPE, f"id must be a string or integer, got {type(source_id).__name__}")

    sample = Sample(
        id=sample_id(ctx.source, ctx.source_ref), source=ctx.source, source_ref=ctx.source_ref,
        task="text", mode=mode, source_id=None if source_id is None else str(source_id),
        messages=messages, media=media,
        provenance=Provenance(pipeline_version=ctx.pipeline_version, config_hash=ctx.config_hash),
    )
    sample.task = task or infer_task(sample, flat_caption="caption" in payload)
    return sample


def infer_task(sample: Sample, flat_caption: bool = False) -> str:
    """Task from the row's shape when the row does not name one."""
    if sample.mode is not None or any(m.reasoning for m in sample.messages):
        return "cold_start"
    kinds = [m.kind for m in sample.media]
    if "video" in kinds:
        return "video"
    if not kinds:
        return "text"
    if any(tok in t for t in sample.texts() for tok in GROUNDING_TOKENS):
        return "grounding"
    if len(kinds) > 1 and _is_interleaved(sample):
        return "interleaved"
    user_text = [p.text for m in sample.messages if m.role == "user"
                 for p in m.content if p.type == "text" and p.text and p.text.strip()]
    if flat_caption or (len(kinds) == 1 and not user_text):
        return "caption"
    return "vqa"


def _is_interleaved(sample: Sample) -> bool:
    """Images separated by text inside a turn (document-style), not just stacked in front."""
    for m in sample.messages:
        kinds = [p.type for p in m.content]
        first_text = next((i for i, k in enumerate(kinds) if k == "text"), None)
        if first_text is not None and any(k != "text" for k in kinds[first_text:]):
            return True
    return False


def _own_messages(raw: Any, media: list[MediaItem], ctx: RowContext) -> list[Message]:
    if not isinstance(raw, list):
        raise _Bad(Reason.WRONG_TYPE, f"messages must be a list, got {type(raw).__name__}")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _Bad(Reason.WRONG_TYPE, f"{where} must be an object, got {type(m).__name__}")
        role = m.get("role")
        if not isinstance(role, str):
            raise _Bad(Reason.WRONG_TYPE, f"{where}.role must be a string")
        if role not in ("system", "user", "assistant"):
            raise _Bad(Reason.UNKNOWN_ROLE, f"{where}.role {role!r}")
        content = m.get("content")
        if isinstance(content, str):
            parts = [ContentPart("text", text=_text(content, f"{where}.content", ctx))]
        elif isinstance(content, list):
            parts = [_own_part(p, f"{where}.content[{j}]", media, ctx) for j, p in enumerate(content)]
        elif content is None:
            parts = []
        else:
            raise _Bad(Reason.WRONG_TYPE, f"{where}.content must be a string or a list")
        reasoning = m.get("reasoning")
        if reasoning is not None:
            reasoning = _text(reasoning, f"{where}.reasoning", ctx)
        out.append(Message(role=role, content=parts, reasoning=reasoning))
    return out


def _own_part(p: Any, where: str, media: list[MediaItem], ctx: RowContext) -> ContentPart:
    if isinstance(p, str):
        return ContentPart("text", text=_text(p, where, ctx))
    if not isinstance(p, dict):
        raise _Bad(Reason.WRONG_TYPE, f"{where} must be an object or string")
    ptype = p.get("type")
    if ptype is None:  # qwen-vl allows the type to be implied by the key
        ptype = next((k for k in ("image", "video", "text") if k in p), None)
    if ptype == "text":
        return ContentPart("text", text=_text(p.get("text"), f"{where}.text", ctx))
    if ptype in MEDIA_KINDS:
        part = _media_part(ptype, p.get(ptype), f"{where}.{ptype}", media, ctx)
        if ptype == "video" and p.get("asr") is not None:
            media[-1].asr = _text(p["asr"], f"{where}.asr", ctx)
        return part
    raise _Bad(Reason.WRONG_TYPE, f"{where}.type {ptype!r} is not text, image or video")


def _flat_messages(payload: dict, media: list[MediaItem], ctx: RowContext) -> list[Message]:
    media_parts = _flat_media(payload, media, ctx)
    if "caption" in payload:
        user = list(media_parts)
        if ctx.default_caption_prompt:
            user.append(ContentPart("text", text=ctx.default_caption_prompt))
        caption = _text(payload["caption"], "caption", ctx)
        return [Message("user", user), Message("assistant", [ContentPart("text", text=caption)])]
    if "question" in payload:
        question = _text(payload["question"], "question", ctx)
        answer = _text(payload.get("answer"), "answer", ctx)
        reasoning = payload.get("reasoning")
        if reasoning is not None:
            reasoning = _text(reasoning, "reasoning", ctx)
        return [Message("user", media_parts + [ContentPart("text", text=question)]),
                Message("assistant", [ContentPart("text", text=answer)], reasoning=reasoning)]
    if "text" in payload:
        text = _text(payload["text"], "text", ctx)
        if media_parts:
            return [Message("user", list(media_parts)), Message("assistant", [ContentPart("text", text=text)])]
        return [Message("assistant", [ContentPart("text", text=text)])]
    raise _Bad(Reason.MISSING_FIELD, "no messages, conversations, caption, question or text")


def _flat_media(payload: dict, media: list[MediaItem], ctx: RowContext) -> list[ContentPart]:
    parts = []
    for key in MEDIA_KEYS:
        if key not in payload or payload[key] is None:
            continue
        kind = key.rstrip("s")
        value = payload[key]
        values = value if key.endswith("s") else [value]
        if not isinstance(values, list):
            raise _Bad(Reason.WRONG_TYPE, f"{key} must be a list of URIs")
        if len(values) > ctx.max_media_per_row:
            raise _Bad(Reason.TOO_MANY_MEDIA, f"{len(values)} {key}, more than {ctx.max_media_per_row}")
        for i, v in enumerate(values):
            parts.append(_media_part(kind, v, f"{key}[{i}]" if key.endswith("s") else key, media, ctx))
    return parts


def _llava_messages(payload: dict, media: list[MediaItem], ctx: RowContext) -> list[Message]:
    convs = payload["conversations"]
    if not isinstance(convs, list):
        raise _Bad(Reason.WRONG_TYPE, f"conversations must be a list, got {type(convs).__name__}")
    pending = {"image": [], "video": []}
    for key in MEDIA_KEYS:
        if key in payload and payload[key] is not None:
            value = payload[key]
            values = value if isinstance(value, list) else [value]
            if len(values) > ctx.max_media_per_row:
                raise _Bad(Reason.TOO_MANY_MEDIA, f"{len(values)} {key}, more than {ctx.max_media_per_row}")
            pending[key.rstrip("s")].extend(values)
    turns = []
    for i, t in enumerate(convs):
        where = f"conversations[{i}]"
        if not isinstance(t, dict):
            raise _Bad(Reason.WRONG_TYPE, f"{where} must be an object")
        who = t.get("from", t.get("role"))
        if not isinstance(who, str):
            raise _Bad(Reason.WRONG_TYPE, f"{where}.from must be a string")
        if who not in LLAVA_ROLES:
            raise _Bad(Reason.UNKNOWN_ROLE, f"{where}.from {who!r}")
        turns.append((LLAVA_ROLES[who], _text(t.get("value"), f"{where}.value", ctx)))

    markers = [m.group(1) for _, v in turns for m in MARKER_RE.finditer(v)]
    n_img, n_vid = len(pending["image"]), len(pending["video"])
    if markers and (markers.count("image") != n_img or markers.count("video") != n_vid):
        raise _Bad(Reason.MEDIA_MARKER_MISMATCH,
                   f"{markers.count('image')} <image> / {markers.count('video')} <video> markers for "
                   f"{n_img} images / {n_vid} videos")
    cursor = {"image": 0, "video": 0}

    def take(kind: str) -> ContentPart:
        uri = pending[kind][cursor[kind]]
        cursor[kind] += 1
        return _media_part(kind, uri, f"{kind}[{cursor[kind] - 1}]", media, ctx)

    messages = []
    lead = [] if markers else [take("video") for _ in range(n_vid)] + [take("image") for _ in range(n_img)]
    for role, value in turns:
        parts: list[ContentPart] = []
        if lead and role == "user":
            parts.extend(lead)
            lead = []
        pos = 0
        for m in MARKER_RE.finditer(value):
            _append_text(parts, value[pos:m.start()].rstrip("\n"), after_marker=pos > 0)
            parts.append(take(m.group(1)))
            pos = m.end()
        _append_text(parts, value[pos:], after_marker=pos > 0)
        messages.append(Message(role, parts))
    if lead:  # media but no human turn to attach them to
        raise _Bad(Reason.MEDIA_MARKER_MISMATCH, "media given but no human turn to place them in")
    return messages


def _append_text(parts: list[ContentPart], text: str, after_marker: bool) -> None:
    # LLaVA writes "<image>\nQuestion": the newline next to a marker is layout, not content.
    if after_marker:
        text = text.lstrip("\n")
    if text.strip():
        parts.append(ContentPart("text", text=text))


def _attach_asr(value: Any, media: list[MediaItem], ctx: RowContext) -> None:
    """A top-level `asr`: one transcript per video of the row, in order."""
    videos = [m for m in media if m.kind == "video"]
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(v is None or isinstance(v, str) for v in values):
        raise _Bad(Reason.WRONG_TYPE, "asr must be a string or a list of strings")
    if len(values) != len(videos):
        raise _Bad(Reason.WRONG_TYPE, f"asr gives {len(values)} transcripts for {len(videos)} videos")
    for item, text in zip(videos, values):
        item.asr = None if text is None else _text(text, "asr", ctx)


def _media_part(kind: str, uri: Any, where: str, media: list[MediaItem], ctx: RowContext) -> ContentPart:
    if not isinstance(uri, str) or not uri.strip():
        raise _Bad(Reason.WRONG_TYPE, f"{where} must be a non-empty URI string")
    if len(media) >= ctx.max_media_per_row:
        raise _Bad(Reason.TOO_MANY_MEDIA, f"more than {ctx.max_media_per_row} media items")
    location = resolve_uri(uri.strip(), ctx)
    # a folder name that is not UTF-8 may sit in the location: the stored uri shows it escaped
    media.append(MediaItem(kind=kind, uri=display_text(display_uri(location, ctx)), location=location))
    return ContentPart(kind, media_index=len(media) - 1)


def resolve_uri(uri: str, ctx: RowContext) -> str:
    """Where a media reference points: an inline URI as is, a remote URI or a local path with
    `..` normalised away; relative references against ctx.base_dir."""
    if uri in ctx.inline_uris:
        return uri
    if "\x00" in uri:
        raise _Bad(Reason.UNSUPPORTED_URI, f"{uri[:200]!r}: a NUL character is no path")
    if uri.startswith("file://"):
        path = unquote(uri[len("file://"):])
        if path.startswith("localhost/"):
            path = path[len("localhost"):]
        if not path.startswith("/"):
            raise _Bad(Reason.UNSUPPORTED_URI, f"{uri[:200]!r}: file:// URIs must name a local absolute path")
        return posixpath.normpath(path)
    if "://" in uri:
        if uri.startswith(READABLE_SCHEMES):
            return normalize_remote(uri)
        raise _Bad(Reason.UNSUPPORTED_URI, f"{uri[:200]!r}: only local paths and "
                   f"{', '.join(READABLE_SCHEMES)} are read (download remote media first)")
    if uri.startswith("data:"):
        raise _Bad(Reason.UNSUPPORTED_URI, "inline data: URIs are not accepted; reference a file")
    if uri.startswith("/"):
        return posixpath.normpath(uri)
    if "://" in ctx.base_dir:
        return normalize_remote(ctx.base_dir.rstrip("/") + "/" + uri)
    return posixpath.normpath(posixpath.join(ctx.base_dir, uri))


def normalize_remote(uri: str) -> str:
    """scheme://bucket/a/../b -> scheme://bucket/b: `..` never climbs above the bucket."""
    scheme, rest = uri.split("://", 1)
    bucket, _, path = rest.partition("/")
    return f"{scheme}://{bucket}{posixpath.normpath('/' + path) if path else ''}"


def display_uri(location: str, ctx: RowContext) -> str:
    """The location as stored in the output: relative to the input root when it lies under
    the same filesystem (local: `../media/a.jpg` for a sibling media folder; remote: only
    below the root), else as resolved."""
    root = ctx.input_root
    if root is None or location in ctx.inline_uris:
        return location
    if "://" in root or "://" in location:
        prefix = root.rstrip("/") + "/"
        return location[len(prefix):] if "://" in root and location.startswith(prefix) else location
    return posixpath.relpath(location, root or ".")


def _text(value: Any, where: str, ctx: RowContext) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(Reason.WRONG_TYPE, f"{where} must be a string, got {type(value).__name__}")
    if len(value) > ctx.max_field_chars:
        raise _Bad(Reason.FIELD_TOO_LARGE, f"{where} has {len(value)} characters, more than {ctx.max_field_chars}")
    return value


def _optional_str(payload: dict, key: str) -> Optional[str]:
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise _Bad(Reason.WRONG_TYPE, f"{key} must be a string, got {type(value).__name__}")
    return value
