"""Per-row visual features shared by semantic dedupe and decontamination, decoded once.

`visual_features` decodes the row's images and video frames (media.frames.item_frames) and
caches in the in-flight `Sample.embeddings` (never written to Parquet):

    "perceptual": (n_items, PERCEPTUAL_DIM) float32, one unit vector per media item
                  (a video's is the normalised mean of its frames')
    "phash":      list (per item) of lists of 64-bit pHashes (one per image / frame)

and sets the `media_pixels` score. A later stage that needs a feature the earlier one did
not compute decodes again; each feature is computed at most once per row.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from filters.perceptual import frame_embedding, mean_embedding
from filters.phash import phash64
from media.frames import item_frames
from schemas.sample import Sample

PERCEPTUAL = "perceptual"
PHASH = "phash"


class NoFrames(Exception):
    """The row's media cannot be decoded here (undecoded video, corrupt bytes): not judged."""


def visual_features(sample: Sample, embedding: bool = True, phash: bool = False) -> None:
    """Fill the requested features into sample.embeddings; raise NoFrames if a media item
    cannot be decoded (the row is then skipped by the visual stages, not rejected: rejecting
    undecodable media is the media stage's job)."""
    need_emb = embedding and PERCEPTUAL not in sample.embeddings
    need_ph = phash and PHASH not in sample.embeddings
    if not (need_emb or need_ph) or not sample.media:
        return
    embs, hashes, pixels = [], [], 0.0
    for i, item in enumerate(sample.media):
        try:
            frames = item_frames(sample, i)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad bytes
            raise NoFrames(f"media[{i}]: {type(e).__name__}: {e}"[:300]) from None
        if not frames:
            raise NoFrames(f"media[{i}]: no frames")
        pixels += float(frames[0].shape[0] * frames[0].shape[1])
        if need_emb:
            embs.append(mean_embedding([frame_embedding(f) for f in frames]))
        if need_ph:
            hashes.append([phash64(f) for f in frames])
    if need_emb:
        sample.embeddings[PERCEPTUAL] = np.stack(embs)
    if need_ph:
        sample.embeddings[PHASH] = hashes
    sample.scores["media_pixels"] = pixels


def row_vector(sample: Sample, kind: str) -> Optional[np.ndarray]:
    """One unit vector for the row: the normalised mean of its items' vectors. kind is
    "perceptual" (computed here) or "clip_image" (from the CLIP stage: (d,) or (n_items, d));
    None when the row has no media or no such embedding."""
    if not sample.media:
        return None
    if kind == "perceptual":
        visual_features(sample, embedding=True)
        vecs = sample.embeddings[PERCEPTUAL]
    else:
        vecs = sample.embeddings.get(kind)
        if vecs is None:
            return None
        if "media_pixels" not in sample.scores:
            px = [(m.source_width or 0) * (m.source_height or 0) for m in sample.media]
            if all(px):
                sample.scores["media_pixels"] = float(sum(px))
    vecs = np.asarray(vecs, dtype=np.float32)
    return mean_embedding(vecs if vecs.ndim == 2 else [vecs])
