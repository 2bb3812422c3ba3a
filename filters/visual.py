"""Per-row visual features shared by semantic dedupe and decontamination, decoded once.

`visual_features` decodes the row's images and video frames (media.frames.item_frames) and
caches in the in-flight `Sample.embeddings` (never written to Parquet):

    "perceptual": (n_items, PERCEPTUAL_DIM) float32, one unit vector per media item
                  (a video's is the normalised mean of its frames'); semantic dedupe drops it
                  once it has the row's vector
    "phash":      list (per item) of lists of 64-bit pHashes (one per image / frame)

and sets the `media_pixels` and `media_quality` scores (`media_size_scores`). A later stage
that needs a feature the earlier one did not compute decodes again; each feature is computed
at most once per row.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from filters.perceptual import item_embedding, mean_embedding
from filters.phash import phash64
from schemas.blobs import BlobUnreadable
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
    embs, hashes, shapes = [], [], []
    for i in range(len(sample.media)):
        try:
            frames = item_frames(sample, i)
        except BlobUnreadable:
            raise               # lost bytes, not bad ones: the stage rejects the row (blob_unreadable)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad bytes
            raise NoFrames(f"media[{i}]: {type(e).__name__}: {e}"[:300]) from None
        if not frames:
            raise NoFrames(f"media[{i}]: no frames")
        shapes.append(frames[0].shape[:2])
        if need_emb:
            embs.append(item_embedding(frames))
        if need_ph:
            hashes.append([phash64(f) for f in frames])
    if need_emb:
        sample.embeddings[PERCEPTUAL] = np.stack(embs)
    if need_ph:
        sample.embeddings[PHASH] = hashes
    media_size_scores(sample, shapes)


def media_size_scores(sample: Sample, decoded_shapes: Optional[list] = None) -> None:
    """`media_pixels`: source width x height summed over the items (the decoder's
    `source_width`/`source_height`; the decoded first frame's size where those are unset);
    `media_quality`: the same plus source bytes x 1e-10, so of two copies at one resolution the
    one with more bytes (the higher bitrate: the original, not the re-encode) ranks first."""
    pixels = nbytes = 0.0
    for i, item in enumerate(sample.media):
        if item.source_width and item.source_height:
            pixels += float(item.source_width * item.source_height)
        elif decoded_shapes is not None and i < len(decoded_shapes):
            pixels += float(decoded_shapes[i][0] * decoded_shapes[i][1])
        else:
            return                      # unknown size: no score rather than a wrong one
        nbytes += float(item.num_bytes or 0)
    sample.scores["media_pixels"] = pixels
    sample.scores["media_quality"] = pixels + min(nbytes, 1e9) * 1e-10


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
        if "media_quality" not in sample.scores:
            media_size_scores(sample)
    vecs = np.asarray(vecs, dtype=np.float32)
    return mean_embedding(vecs if vecs.ndim == 2 else [vecs])
