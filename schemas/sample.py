"""The kept-sample row: Python types, the Arrow schema, and the conversion between them.

A `Sample` is what flows between curation stages. `Sample.to_row()` gives the dict that
is written to Parquet (under `SAMPLE_SCHEMA`) and, as JSON, to `KEY.json` in WebDataset
shards. Media payloads travel in `Sample.blobs`, keyed by WebDataset member name
(`KEY.0.jpg`); they go into the tar, never into Parquet. Each `MediaItem.members` names the
members that hold that item's bytes or frames, so a Parquet row points into its tar.

Conversations follow the qwen-vl / keye-vl-utils message layout: a list of turns, each
with a role and a list of content parts; an image or video part points at `media` by index.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa

from schemas.scores import MEDIA_STAT_NAMES, SCORE_NAMES

TASKS = ("caption", "ocr", "vqa", "grounding", "interleaved", "video", "text", "cold_start")
MODES = ("think", "no_think", "auto_think", "agentic_think")
# The cold-start mixture's categories (what mixture.shares are set for), in Keye-VL's order.
CATEGORIES = ("non_thinking", "thinking", "auto_think", "think_with_image", "video_think", "video_no_think")
ROLES = ("system", "user", "assistant")
MEDIA_KINDS = ("image", "video")
PART_TYPES = ("text", "image", "video")


@dataclass
class ContentPart:
    type: str                          # one of PART_TYPES
    text: Optional[str] = None         # for type == "text"
    media_index: Optional[int] = None  # for image / video: index into Sample.media


@dataclass
class Message:
    role: str                          # one of ROLES
    content: list[ContentPart]
    reasoning: Optional[str] = None    # an assistant's reasoning trace, rendered as <think>...</think>


@dataclass
class MediaItem:
    kind: str                                   # image | video
    uri: str                                    # where the bytes came from, relative to the input root
                                                # (as source_ref is) when under it: path, gs://..., tar#member
    sha256: Optional[str] = None                # of the original bytes
    num_bytes: Optional[int] = None
    source_width: Optional[int] = None          # decoded size, rotation applied
    source_height: Optional[int] = None
    width: Optional[int] = None                 # size the model sees (after smart_resize); slow frames for video
    height: Optional[int] = None
    fast_width: Optional[int] = None            # slow-fast video: size of fast frames
    fast_height: Optional[int] = None
    duration_s: Optional[float] = None
    fps: Optional[float] = None                 # native average frame rate
    frame_timestamps: list[float] = field(default_factory=list)  # seconds, of sampled frames
    frame_types: list[int] = field(default_factory=list)         # 0 = slow, 1 = fast
    visual_tokens: int = 0                      # exactly sum over frames of (h/28)*(w/28); images: one frame
    members: list[str] = field(default_factory=list)             # WebDataset members, e.g. "KEY.0.jpg"
    # Set by the media stage (media/frames.py documents the member layout):
    codec: Optional[str] = None                 # decoder name: h264, hevc, vp9, av1, jpeg, png, ...
    source_member: Optional[str] = None         # member holding the original bytes, when they are kept
    stats: dict[str, Optional[float]] = field(default_factory=dict)  # schemas.scores.MEDIA_STAT_DOCS
    asr: Optional[str] = None                   # speech transcript of a video (input key "asr"); recaptions condition on it
    # In flight only, never written: where the media stage reads the bytes (absolute, symlinks
    # resolved). `uri` is the same place relative to the input root, so outputs do not depend
    # on where the corpus sits; None: read `uri` itself.
    location: Optional[str] = None


@dataclass
class CaptionerRecord:
    """Who wrote a caption: recorded for every model-written text."""

    captioner_id: str
    prompt_id: Optional[str] = None
    fps: Optional[float] = None
    target: Optional[str] = None    # where the text is: "messages[1].content[0]" or "alternatives[0]"


@dataclass
class Alternative:
    """A text that competed for a place in the row and lost (e.g. the source caption when a
    recaption scored higher, or a recaption that scored lower). Who wrote it is recorded in
    `provenance.captioners` under target "alternatives[k]"; an alternative that no record
    names came with the source row."""

    target: str                          # the text it competed for, e.g. "messages[1].content[0]"
    text: str
    clip_score: Optional[float] = None   # under the same rule as scores["clip_score"]


@dataclass
class GenerationRecord:
    """Who wrote a generated text of a mixture row (a reasoning path, an analysis, image code):
    recorded for every generated text the row holds."""

    backend: str                         # openai | transformers
    model: str                           # the generator's id (mixture.builders.generator)
    prompt_id: str                       # mixture/prompts/<prompt_id>.txt
    temperature: float
    max_new_tokens: int
    seed: int
    path_index: int                      # which of the item's sampled paths (0 for single requests)
    target: str                          # what it became: "reasoning", "analysis", "image_code", "continuation"


@dataclass
class Provenance:
    pipeline_version: str = ""
    config_hash: str = ""
    captioners: list[CaptionerRecord] = field(default_factory=list)
    generations: list[GenerationRecord] = field(default_factory=list)


@dataclass
class Sample:
    id: str                         # stable: hash of source and source_ref
    source: str                     # input name (a dataset)
    source_ref: str                 # relative file path and locator (line, row, member key)
    task: str
    messages: list[Message]
    media: list[MediaItem] = field(default_factory=list)
    mode: Optional[str] = None
    source_id: Optional[str] = None  # the row's own id, if it had one
    text_tokens: int = 0
    visual_tokens: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    alternatives: list[Alternative] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)  # member name -> bytes; not in Parquet
    # In-flight vectors (e.g. "clip_image", "clip_text"): used by later stages (dedupe,
    # decontamination), written to the embeddings sidecar, never to Parquet or KEY.json.
    embeddings: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- views -------------------------------------------------------------------
    def texts(self) -> list[str]:
        """Every text the row holds, in order (turn texts and reasoning traces)."""
        out = []
        for m in self.messages:
            if m.reasoning:
                out.append(m.reasoning)
            out.extend(p.text for p in m.content if p.type == "text" and p.text)
        return out

    def to_row(self) -> dict[str, Any]:
        """The Parquet / KEY.json row (blobs excluded, scores filled to the registry)."""
        unknown = set(self.scores) - set(SCORE_NAMES)
        if unknown:
            raise KeyError(f"unregistered scores {sorted(unknown)}: add them to schemas/scores.py")
        d = dataclasses.asdict(dataclasses.replace(self, blobs={}, embeddings={}))
        d.pop("blobs")
        d.pop("embeddings")
        d["scores"] = {name: self.scores.get(name) for name in SCORE_NAMES}
        for item in d["media"]:
            item.pop("location")
            unknown = set(item["stats"]) - set(MEDIA_STAT_NAMES)
            if unknown:
                raise KeyError(f"unregistered media stats {sorted(unknown)}: add them to schemas/scores.py")
            item["stats"] = {name: item["stats"].get(name) for name in MEDIA_STAT_NAMES}
        return d

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Sample":
        """Inverse of to_row (blobs empty). Accepts rows read back from Parquet or JSON."""
        messages = [
            Message(role=m["role"], reasoning=m.get("reasoning"),
                    content=[ContentPart(**p) for p in m["content"]])
            for m in row["messages"]
        ]
        media = [MediaItem(**{**mi, "stats": {k: v for k, v in (mi.get("stats") or {}).items()
                                              if v is not None}})
                 for mi in row.get("media") or []]
        prov = row.get("provenance") or {}
        provenance = Provenance(
            pipeline_version=prov.get("pipeline_version", ""),
            config_hash=prov.get("config_hash", ""),
            captioners=[CaptionerRecord(**c) for c in prov.get("captioners") or []],
            generations=[GenerationRecord(**g) for g in prov.get("generations") or []],
        )
        scores = {k: v for k, v in (row.get("scores") or {}).items() if v is not None}
        alternatives = [Alternative(**a) for a in row.get("alternatives") or []]
        return cls(id=row["id"], source=row["source"], source_ref=row["source_ref"],
                   task=row["task"], mode=row.get("mode"), source_id=row.get("source_id"),
                   messages=messages, media=media, text_tokens=row.get("text_tokens", 0),
                   visual_tokens=row.get("visual_tokens", 0), scores=scores, provenance=provenance,
                   alternatives=alternatives)

    def to_json(self) -> bytes:
        """Canonical JSON of the row: sorted keys, no whitespace, so bytes are deterministic."""
        return canonical_json(self.to_row())


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def member_order(name: str) -> tuple:
    """Natural order of WebDataset member names: "K.2.jpg" before "K.10.jpg"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))


def sample_id(source: str, source_ref: str) -> str:
    """Stable id from where the row came from: same input layout, same ids, on any runner."""
    return hashlib.sha1(f"{source}\x1f{source_ref}".encode("utf-8")).hexdigest()[:24]


# --- Arrow schema ------------------------------------------------------------------
CONTENT_PART_TYPE = pa.struct([
    ("type", pa.string()),
    ("text", pa.large_string()),
    ("media_index", pa.int32()),
])
MESSAGE_TYPE = pa.struct([
    ("role", pa.string()),
    ("content", pa.list_(CONTENT_PART_TYPE)),
    ("reasoning", pa.large_string()),
])
MEDIA_ITEM_TYPE = pa.struct([
    ("kind", pa.string()),
    ("uri", pa.string()),
    ("sha256", pa.string()),
    ("num_bytes", pa.int64()),
    ("source_width", pa.int32()),
    ("source_height", pa.int32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fast_width", pa.int32()),
    ("fast_height", pa.int32()),
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("frame_timestamps", pa.list_(pa.float64())),
    ("frame_types", pa.list_(pa.int8())),
    ("visual_tokens", pa.int64()),
    ("members", pa.list_(pa.string())),
    ("codec", pa.string()),
    ("source_member", pa.string()),
    ("stats", pa.struct([(name, pa.float64()) for name in MEDIA_STAT_NAMES])),
    ("asr", pa.large_string()),
])
CAPTIONER_TYPE = pa.struct([
    ("captioner_id", pa.string()),
    ("prompt_id", pa.string()),
    ("fps", pa.float64()),
    ("target", pa.string()),
])
ALTERNATIVE_TYPE = pa.struct([
    ("target", pa.string()),
    ("text", pa.large_string()),
    ("clip_score", pa.float64()),
])
GENERATION_TYPE = pa.struct([
    ("backend", pa.string()),
    ("model", pa.string()),
    ("prompt_id", pa.string()),
    ("temperature", pa.float64()),
    ("max_new_tokens", pa.int64()),
    ("seed", pa.int64()),
    ("path_index", pa.int32()),
    ("target", pa.string()),
])
PROVENANCE_TYPE = pa.struct([
    ("pipeline_version", pa.string()),
    ("config_hash", pa.string()),
    ("captioners", pa.list_(CAPTIONER_TYPE)),
    ("generations", pa.list_(GENERATION_TYPE)),
])
SCORES_TYPE = pa.struct([(name, pa.float64()) for name in SCORE_NAMES])

SAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("source_ref", pa.string()),
    ("source_id", pa.string()),
    ("task", pa.string()),
    ("mode", pa.string()),
    ("messages", pa.list_(MESSAGE_TYPE)),
    ("media", pa.list_(MEDIA_ITEM_TYPE)),
    ("text_tokens", pa.int64()),
    ("visual_tokens", pa.int64()),
    ("scores", SCORES_TYPE),
    ("provenance", PROVENANCE_TYPE),
    ("alternatives", pa.list_(ALTERNATIVE_TYPE)),
])
