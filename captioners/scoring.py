"""The CLIP scoring rules: which pictures are compared with which texts, and how cosines become scores.

`plan(sample)` lists the row's *units*, each a decoded picture and optionally the index of the
text it is compared with; `finish(plan, image_emb, text_emb)` turns their embeddings into
scores (schemas/scores.py) and the row's vectors. Between the two, the pipeline batches units
of many rows through the model (pipelines/score.py); outside Beam `score_sample` does all three.

Rules, by what the row is (keye.md sections 2.2, 2.4, 2.5, 2.6):

* caption rows (task caption, or a video row whose user turns hold no question): each image
  vs the caption -> `clip_image_text` (mean over images); each sampled frame of each video vs
  the caption -> `clip_video_mean`, `clip_video_max`. `clip_score` is clip_video_mean when the
  row has a video, else clip_image_text.
* grounding rows: each box `<|box_start|>[[x1,y1,x2,y2], ...]<|box_end|>` (and each quad or
  polygon, by its bounding box) in Keye's [0, 1000) coordinates is cropped from the image it
  follows and compared with its referring text, the last `<|object_ref_start|>...<|object_ref_end|>`
  before it (else the turn's own text without the special spans, else the previous user
  turn's) -> `clip_grounding_min` (= `clip_score`: Keye keeps the higher-scoring annotations)
  and `clip_grounding_mean`. Points have no region and are not scored.
* interleaved rows: each image vs its neighbouring text, the text parts right before and
  after it in its turn (else the nearest text in the turn, else in the row) ->
  `clip_interleaved_min` (= `clip_score`) and `clip_interleaved_mean`.
* every other row with pictures (QA, OCR, reasoning): each image and frame vs the row's text
  (questions and answers) -> clip_image_text / clip_video_*, stored but never thresholded.

Every row with pictures also gets `clip_image` (one unit vector per media item: the image, or
a video's normalised mean frame) and `clip_text` (the row's whole text) for the dedupe and
decontamination stages. A row whose pictures cannot be decoded (an undecoded video container,
bytes PIL cannot read) gets no scores at all, and the reason is counted.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from media.frames import UndecodedVideo, frame_count, item_frames
from schemas.blobs import BlobUnreadable
from schemas.sample import Sample

SPECIAL_RE = re.compile(r"<\|[a-z_]+\|>")
GROUNDING_RE = re.compile(
    r"<\|object_ref_start\|>(?P<ref>.*?)<\|object_ref_end\|>"
    r"|<\|box_start\|>(?P<box>.*?)<\|box_end\|>"
    r"|<\|quad_start\|>(?P<quad>.*?)<\|quad_end\|>"
    r"|<\|polygon_start\|>(?P<poly>.*?)<\|polygon_end\|>", re.S)
SPAN_RE = re.compile(r"<\|(box|quad|polygon|point)_start\|>.*?<\|\1_end\|>", re.S)
COORD_SCALE = 1000.0
MIN_CROP_PX = 2

# unit kinds
IMAGE, FRAME, CROP, NEIGHBOUR = "image", "frame", "crop", "neighbour"


@dataclass
class Unit:
    kind: str                  # image | frame | crop | neighbour
    item: int                  # media index
    text: Optional[int]        # index into ScorePlan.texts; None: embedded only (for clip_image)


@dataclass
class ScorePlan:
    rule: str                               # caption | grounding | interleaved | generic
    pictures: list[np.ndarray]              # decoded RGB, one per unit but the neighbour units (appended last)
    units: list[Unit]
    texts: list[str]                        # texts[0] is the row's whole text
    item_units: list[list[int]]             # per media item: the units whose mean is its clip_image
    caption: Optional[tuple[int, int]] = None   # (message, part) of the caption for caption rows


@dataclass(frozen=True)
class Unscored:
    why: str          # counted as score/unscored/<why>
    detail: str = ""


@dataclass
class ScoreResult:
    scores: dict[str, float]
    clip_image: Optional[np.ndarray]        # (n_items, d) unit rows
    clip_text: Optional[np.ndarray]         # (d,)
    caption_units: Optional[np.ndarray] = None   # (k, d) pictures the caption rule compares with (recaptions)


# --- reading the row ---------------------------------------------------------------------------
def clean(text: str) -> str:
    """Text without grounding spans and special tokens, whitespace collapsed."""
    text = SPAN_RE.sub(" ", text)
    text = SPECIAL_RE.sub(" ", text)
    return " ".join(text.split())


def row_text(sample: Sample) -> str:
    """The row's whole text (every turn, reasoning excluded), as CLIP reads it."""
    return clean(" ".join(p.text for m in sample.messages for p in m.content
                          if p.type == "text" and p.text))


def caption_target(sample: Sample, caption_prompt: Optional[str] = None) -> Optional[tuple[int, int]]:
    """(message, part) of the caption if the row is a caption pair, else None.

    A caption row has pictures, one assistant turn with one text part, and user turns with no
    text (or only the recipe's default caption prompt); task caption rows always qualify."""
    if not sample.media or sample.task not in ("caption", "video"):
        return None
    assistants = [i for i, m in enumerate(sample.messages) if m.role == "assistant"]
    if len(assistants) != 1:
        return None
    parts = [j for j, p in enumerate(sample.messages[assistants[0]].content) if p.type == "text"]
    if len(parts) != 1:
        return None
    if sample.task != "caption":
        user_text = [p.text.strip() for m in sample.messages if m.role == "user" for p in m.content
                     if p.type == "text" and p.text and p.text.strip()]
        if user_text and user_text != [caption_prompt]:
            return None
    return assistants[0], parts[0]


def frame_indices(n: int, k: int) -> list[int]:
    """At most k evenly spaced indices of n frames, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def item_pictures(sample: Sample, index: int, max_frames: int) -> list[np.ndarray]:
    """The item's image, or up to max_frames of its sampled frames, decoded (only those)."""
    item = sample.media[index]
    if item.kind != "video":
        return item_frames(sample, index)
    return item_frames(sample, index, frame_indices(frame_count(item), max_frames))


# --- plans ---------------------------------------------------------------------------------------
def plan(sample: Sample, max_frames: int = 32, caption_prompt: Optional[str] = None) -> Union[ScorePlan, Unscored]:
    """The units to embed for this row, or why it is not scored."""
    if not sample.media:
        return Unscored("no_media")
    whole = row_text(sample)
    try:
        decoded = [item_pictures(sample, i, max_frames) for i in range(len(sample.media))]
    except UndecodedVideo as e:
        return Unscored("undecoded_video", str(e))
    except BlobUnreadable:
        raise                   # lost bytes, not bad ones: the row is rejected (blob_unreadable), not passed on unscored
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad bytes
        return Unscored("undecodable_media", f"{type(e).__name__}: {e}"[:300])
    if any(not frames for frames in decoded):
        return Unscored("undecodable_media", "a media item has no frames")

    texts = [whole] if whole else []
    pictures: list[np.ndarray] = []
    units: list[Unit] = []
    item_units: list[list[int]] = []
    caption = caption_target(sample, caption_prompt)
    rule = ("caption" if caption is not None else "grounding" if sample.task == "grounding"
            else "interleaved" if sample.task == "interleaved" else "generic")
    if rule == "caption":
        cap = sample.messages[caption[0]].content[caption[1]].text or ""
        texts = [cap.strip()] if cap.strip() else []
        if not texts:
            return Unscored("no_text")
    elif not texts:
        return Unscored("no_text")

    whole_text = 0 if rule in ("caption", "generic") else None
    for i, frames in enumerate(decoded):
        kind = FRAME if sample.media[i].kind == "video" else IMAGE
        ids = []
        for f in frames:
            ids.append(len(units))
            units.append(Unit(kind, i, whole_text))
            pictures.append(f)
        item_units.append(ids)

    if rule == "grounding":
        regions = grounding_regions(sample)
        for item, box, ref in regions:
            crop = crop_box(decoded[item][0], box)
            if crop is None:
                continue
            texts.append(ref)
            units.append(Unit(CROP, item, len(texts) - 1))
            pictures.append(crop)
        if not any(u.kind == CROP for u in units):
            return Unscored("no_regions", f"{len(regions)} regions, none croppable with a referring text")
    elif rule == "interleaved":
        for item, neighbour in neighbour_texts(sample):
            if sample.media[item].kind != "image" or not neighbour:
                continue
            texts.append(neighbour)
            units.append(Unit(NEIGHBOUR, item, len(texts) - 1))   # reuses its image unit's picture
        if not any(u.kind == NEIGHBOUR for u in units):
            return Unscored("no_text", "no image has neighbouring text")
    return ScorePlan(rule=rule, pictures=pictures, units=units, texts=texts, item_units=item_units,
                     caption=caption)


def grounding_regions(sample: Sample) -> list[tuple[int, list[float], str]]:
    """(image index, [x1, y1, x2, y2] in [0, 1000), referring text) for every box, quad and polygon."""
    out = []
    ref: Optional[str] = None
    image: Optional[int] = None
    last_user_text = ""
    for m in sample.messages:
        turn_text = ""
        for p in m.content:
            if p.type == "image":
                image = p.media_index
                continue
            if p.type != "text" or not p.text:
                continue
            turn_text = clean(p.text)
            for match in GROUNDING_RE.finditer(p.text):
                if match.group("ref") is not None:
                    ref = clean(match.group("ref"))
                    continue
                raw = match.group("box") or match.group("quad") or match.group("poly") or ""
                for box in _parse_regions(raw):
                    target = image if image is not None else _first_image(sample)
                    text = ref or turn_text or last_user_text
                    if target is not None and text:
                        out.append((target, box, text))
        if m.role == "user" and turn_text:
            last_user_text = turn_text
    return out


def _first_image(sample: Sample) -> Optional[int]:
    return next((i for i, m in enumerate(sample.media) if m.kind == "image"), None)


def _parse_regions(raw: str) -> list[list[float]]:
    """Boxes [[x1,y1,x2,y2],...]; quads and polygons [[[x,y],...],...] become their bounding boxes.
    A region with a coordinate that is not a finite number (null, true, NaN, Infinity) is skipped."""
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    if value and _coords(value) is not None:
        value = [value]
    boxes = []
    for v in value:
        flat = _coords(v)
        if flat is not None and len(flat) == 4:
            boxes.append(flat)
        elif flat is not None and len(flat) == 8:
            xs, ys = flat[0::2], flat[1::2]
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
        elif isinstance(v, list) and v and all(isinstance(pt, list) and len(pt) == 2 for pt in v):
            points = [_coords(pt) for pt in v]
            if all(pt is not None for pt in points):
                xs, ys = [pt[0] for pt in points], [pt[1] for pt in points]
                boxes.append([min(xs), min(ys), max(xs), max(ys)])
    return boxes


def _coords(v) -> Optional[list[float]]:
    """v as floats if it is a list of finite JSON numbers, else None."""
    if not isinstance(v, list) or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v):
        return None
    try:
        flat = [float(c) for c in v]
    except OverflowError:       # an integer too large for a float
        return None
    return flat if all(math.isfinite(c) for c in flat) else None


def crop_box(image: np.ndarray, box: list[float]) -> Optional[np.ndarray]:
    """The region of a [0, 1000)-normalised box, or None if it is smaller than MIN_CROP_PX."""
    h, w = image.shape[:2]
    # clamped before scaling: a huge coordinate times the width would overflow to inf
    x1, y1, x2, y2 = (min(max(c, 0.0), COORD_SCALE) for c in box)
    left, right = math.floor(min(x1, x2) * w / COORD_SCALE), math.ceil(max(x1, x2) * w / COORD_SCALE)
    top, bottom = math.floor(min(y1, y2) * h / COORD_SCALE), math.ceil(max(y1, y2) * h / COORD_SCALE)
    if right - left < MIN_CROP_PX or bottom - top < MIN_CROP_PX:
        return None
    return np.ascontiguousarray(image[top:bottom, left:right])


def neighbour_texts(sample: Sample) -> list[tuple[int, str]]:
    """(media index, neighbouring text) for each image or video part, in reading order."""
    all_texts = [(mi, j, clean(p.text)) for mi, m in enumerate(sample.messages)
                 for j, p in enumerate(m.content) if p.type == "text" and p.text and clean(p.text)]
    out = []
    for mi, m in enumerate(sample.messages):
        parts = m.content
        for j, p in enumerate(parts):
            if p.type == "text" or p.media_index is None:
                continue
            adjacent = [clean(parts[k].text) for k in (j - 1, j + 1)
                        if 0 <= k < len(parts) and parts[k].type == "text" and parts[k].text]
            text = " ".join(t for t in adjacent if t)
            if not text:
                same_turn = [(abs(k - j), t) for (mk, k, t) in all_texts if mk == mi]
                anywhere = [(abs(mk - mi), abs(k - j), t) for (mk, k, t) in all_texts]
                text = (min(same_turn)[1] if same_turn else min(anywhere)[2] if anywhere else "")
            out.append((p.media_index, text))
    return out


# --- scores ----------------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


def finish(p: ScorePlan, image_emb: np.ndarray, text_emb: np.ndarray) -> ScoreResult:
    """Scores and vectors from the embeddings of p.pictures and p.texts (unit rows)."""
    scores: dict[str, float] = {}

    def picture(i: int) -> int:
        """A neighbour unit's picture is its image's, embedded once under the image unit."""
        u = p.units[i]
        return p.item_units[u.item][0] if u.kind == NEIGHBOUR else i

    def cosines(kind: str) -> np.ndarray:
        """Each unit of this kind against its text."""
        ids = [i for i, u in enumerate(p.units) if u.kind == kind and u.text is not None]
        if not ids:
            return np.zeros(0, np.float32)
        return np.array([image_emb[picture(i)] @ text_emb[p.units[i].text] for i in ids], np.float32)

    def units_of(kind: str) -> list[int]:
        return [i for i, u in enumerate(p.units) if u.kind == kind and u.text is not None]

    images, frames = units_of(IMAGE), units_of(FRAME)
    if images:   # against the row text (texts[0]): one matrix product, as caption_score computes it
        scores["clip_image_text"] = caption_score(image_emb[images], text_emb[0])
    if frames:
        per_frame = image_emb[frames] @ text_emb[0]
        scores["clip_video_mean"] = caption_score(image_emb[frames], text_emb[0])
        scores["clip_video_max"] = float(per_frame.max())
    caption_units = None
    if p.rule == "caption":
        is_video = bool(frames)
        scores["clip_score"] = scores["clip_video_mean"] if is_video else scores["clip_image_text"]
        caption_units = image_emb[frames if is_video else images]
    elif p.rule == "grounding":
        crops = cosines(CROP)
        scores["clip_grounding_min"] = float(crops.min())
        scores["clip_grounding_mean"] = float(crops.mean())
        scores["clip_score"] = scores["clip_grounding_min"]
    elif p.rule == "interleaved":
        neighbours = cosines(NEIGHBOUR)
        scores["clip_interleaved_min"] = float(neighbours.min())
        scores["clip_interleaved_mean"] = float(neighbours.mean())
        scores["clip_score"] = scores["clip_interleaved_min"]
    clip_image = _unit(np.stack([image_emb[ids].mean(axis=0) for ids in p.item_units]))
    return ScoreResult(scores=scores, clip_image=clip_image,
                       clip_text=text_emb[0].astype(np.float32) if len(text_emb) else None,
                       caption_units=caption_units)


def caption_score(caption_units: np.ndarray, text_emb: np.ndarray) -> float:
    """Mean cosine of the caption rule's pictures (images, or a video's frames) and a text: the
    clip_score of a caption, and of every recaption of the same row (the same expression, so a
    recaption equal to the original scores exactly the same)."""
    return float(np.mean(caption_units @ text_emb))


def caption_rule_scores(caption_units: np.ndarray, text_emb: np.ndarray, is_video: bool) -> dict[str, float]:
    """The per-rule scores a caption's clip_score mirrors (clip_video_mean/max for a video row,
    clip_image_text otherwise), for a text: what a recaption that wins rewrites, so every stored
    score describes the row's text."""
    per_unit = caption_units @ text_emb
    if is_video:
        return {"clip_video_mean": caption_score(caption_units, text_emb), "clip_video_max": float(per_unit.max())}
    return {"clip_image_text": caption_score(caption_units, text_emb)}


def score_sample(sample: Sample, scorer, max_frames: int = 32,
                 caption_prompt: Optional[str] = None) -> Union[ScoreResult, Unscored]:
    """plan + embed + finish for one row, with a captioners.clip.ClipScorer (no Beam)."""
    p = plan(sample, max_frames, caption_prompt)
    if isinstance(p, Unscored):
        return p
    return finish(p, scorer.embed_images(p.pictures), scorer.embed_texts(p.texts))
