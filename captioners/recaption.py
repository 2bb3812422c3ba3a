"""Recaptioning a row, without Beam: the requests it needs, and keeping the better caption.

For a caption row routed by the score stage (captioners.routing.route == "recaption"):

* an image row gets one request: its images and the `recaption.image_prompt`;
* a video row gets one request per rate in `recaption.video_fps` (Keye: 0.5, 1 and 2 fps): the
  sampled frames thinned to that rate (`frames_at`), at most `max_frames`, with
  `video_asr_prompt` when the video has an ASR transcript, else `video_prompt`.

Pictures are decoded from the row's blobs and sent as JPEG, downscaled to `image_max_side`.
Each new caption is normalised like every other text (filters/text.py), scored by CLIP under
the row's own rule (captioners.scoring.caption_score), and `choose` keeps the caption with the
highest score: a new caption replaces the original only if it scores strictly higher. Every
text that lost is stored in `Sample.alternatives` with its score; every model-written text,
kept or not, gets a `CaptionerRecord` (captioner id, prompt id, fps) in provenance.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from captioners.backends import CaptionRequest
from captioners.prompts import load_prompt
from captioners.scoring import caption_target, frame_indices, item_pictures
from media.images import encode_jpeg, resize_rgb
from media.frames import UndecodedVideo, frame_count, item_frames
from schemas.config import RecaptionConfig
from schemas.sample import Alternative, CaptionerRecord, Sample


def frames_at(timestamps: Sequence[float], fps: float, max_frames: int) -> list[int]:
    """Indices of the frames that sample the video at `fps`: the first frame at or after each
    multiple of 1/fps (timestamps ascending), then evenly thinned to max_frames."""
    if not timestamps:
        return []
    step = 1.0 / fps
    chosen, next_t = [], timestamps[0]
    for i, t in enumerate(timestamps):
        if t + 1e-6 >= next_t:
            chosen.append(i)
            next_t = timestamps[0] + step * (int((t - timestamps[0]) / step + 1e-6) + 1)
    if len(chosen) > max_frames:
        chosen = [chosen[i] for i in frame_indices(len(chosen), max_frames)]
    return chosen


def jpeg(rgb: np.ndarray, max_side: int, quality: int = 90) -> bytes:
    """RGB array -> JPEG bytes, the longer side at most max_side (never upscaled)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    return encode_jpeg(resize_rgb(rgb, (max(1, round(h * scale)), max(1, round(w * scale)))), quality)


def _seed(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)


@dataclass
class Planned:
    """A routed row and its requests."""

    sample: Sample
    target: tuple[int, int]          # (message, part) of the caption
    requests: list[CaptionRequest]


def plan_requests(sample: Sample, cfg: RecaptionConfig, caption_prompt: Optional[str] = None) -> Optional[Planned]:
    """The requests that recaption this row; None if it is not a caption row with pictures."""
    target = caption_target(sample, caption_prompt)
    if target is None:
        return None
    videos = [i for i, m in enumerate(sample.media) if m.kind == "video"]
    requests = []
    if videos:
        item = sample.media[videos[0]]
        n = frame_count(item)
        timestamps = list(item.frame_timestamps)[:n] or [float(i) for i in range(n)]
        picks = {fps: frames_at(timestamps, fps, cfg.max_frames) for fps in cfg.video_fps}
        needed = sorted({i for ids in picks.values() for i in ids})
        try:
            frames = item_frames(sample, videos[0], needed)
        except UndecodedVideo:
            return None                       # a container the media stage never sampled: nothing to show a model
        encoded = {i: jpeg(f, cfg.image_max_side) for i, f in zip(needed, frames)}
        duration = item.duration_s or (timestamps[-1] - timestamps[0])
        prompt = load_prompt(cfg.video_asr_prompt if item.asr else cfg.video_prompt)
        for fps, picked in picks.items():
            key = f"{sample.id}@{fps:g}fps"
            text = prompt.render(fps=f"{fps:g}", num_frames=len(picked), duration_s=f"{duration:.1f}",
                                 asr=item.asr or "")
            requests.append(CaptionRequest(key, prompt.id, text, [encoded[i] for i in picked], _seed(key), fps))
    else:
        prompt = load_prompt(cfg.image_prompt)
        pictures = [item_pictures(sample, i, 1)[0] for i, m in enumerate(sample.media) if m.kind == "image"]
        key = f"{sample.id}@image"
        requests.append(CaptionRequest(key, prompt.id, prompt.render(),
                                       [jpeg(p, cfg.image_max_side) for p in pictures], _seed(key)))
    return Planned(sample, target, requests)


@dataclass
class Candidate:
    request: CaptionRequest
    text: str
    clip_score: float


def choose(sample: Sample, target: tuple[int, int], candidates: Sequence[Candidate], captioner_id: str,
           new_text_embedding: Optional[np.ndarray] = None) -> bool:
    """Keep the best caption by CLIP score; store the others in alternatives; record provenance.
    Returns whether a new caption replaced the original (ties keep the original). When it did,
    clip_score becomes the new text's score; the replaced caption keeps its score in alternatives.

    `new_text_embedding` is the best candidate's CLIP text vector: it becomes the row's
    clip_text if that candidate is kept."""
    m, p = target
    where = f"messages[{m}].content[{p}]"
    original = sample.messages[m].content[p].text or ""
    original_score = sample.scores.get("clip_score")
    best = max(candidates, key=lambda c: c.clip_score)    # max keeps the first of equal scores
    sample.scores["clip_recaption"] = best.clip_score
    won = original_score is None or best.clip_score > original_score
    losers: list[tuple[Optional[Candidate], str, Optional[float]]] = []
    if won:
        sample.messages[m].content[p].text = best.text
        sample.scores["clip_score"] = best.clip_score     # the row's score describes the row's text
        sample.provenance.captioners.append(CaptionerRecord(captioner_id, best.request.prompt_id,
                                                            best.request.fps, where))
        losers.append((None, original, original_score))
        if new_text_embedding is not None:
            sample.embeddings["clip_text"] = new_text_embedding
    losers += [(c, c.text, c.clip_score) for c in candidates if not (won and c is best)]
    for cand, text, score in losers:
        k = len(sample.alternatives)
        sample.alternatives.append(Alternative(target=where, text=text, clip_score=score))
        if cand is not None:
            sample.provenance.captioners.append(CaptionerRecord(captioner_id, cand.request.prompt_id,
                                                                cand.request.fps, f"alternatives[{k}]"))
    return won
