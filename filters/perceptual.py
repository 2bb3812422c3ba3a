"""A cheap built-in perceptual embedding, so semantic dedupe works without the CLIP stage.

Per image or frame: convert to YCrCb, shrink with area averaging (which is what makes it
blind to resolution, JPEG quality and bitrate) to a 16x16 luma and an 8x8 chroma thumbnail;
centre the luma on its mean (blind to brightness shifts), centre chroma on neutral grey
(keeps the colours), append the mean brightness, and L2-normalise: 385 float32 values.

Measured here on 300 procedural images plus 200 crops of two photographs: every re-encode
(JPEG quality 20-90, half / double / three-quarter size) scores cosine >= 0.996 with its
original, while distinct procedural images stay below 0.56; only heavily overlapping crops of
one photograph exceed 0.95 (they are near-duplicates by design of this test).

A video gets one embedding: the normalised mean of its frame embeddings, so a re-encode of
the same clip at another resolution or bitrate lands next to the original. A row with several
media items gets the normalised mean of its items (see pipelines/semantic_dedupe.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

LUMA_SIDE = 16
CHROMA_SIDE = 8
PERCEPTUAL_DIM = LUMA_SIDE * LUMA_SIDE + 2 * CHROMA_SIDE * CHROMA_SIDE + 1
_CHROMA_WEIGHT = 0.5
_BRIGHTNESS_WEIGHT = 2.0


def frame_embedding(rgb: np.ndarray) -> np.ndarray:
    """(PERCEPTUAL_DIM,) float32 unit vector for one RGB uint8 image (H, W, 3)."""
    import cv2

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    y = cv2.resize(ycc[..., 0], (LUMA_SIDE, LUMA_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    c = cv2.resize(ycc[..., 1:], (CHROMA_SIDE, CHROMA_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    mean_y = float(ycc[..., 0].mean())
    v = np.concatenate([
        ((y - y.mean()) / 128.0).ravel(),
        (_CHROMA_WEIGHT * (c - 128.0) / 128.0).ravel(),
        [_BRIGHTNESS_WEIGHT * (mean_y - 128.0) / 128.0],
    ]).astype(np.float32)
    return normalize(v)


def item_embedding(frames: Sequence[np.ndarray]) -> np.ndarray:
    """One image -> its embedding; a video's frames -> normalised mean of frame embeddings."""
    if not frames:
        raise ValueError("no frames")
    return mean_embedding([frame_embedding(f) for f in frames])


def mean_embedding(vectors: Sequence[np.ndarray]) -> np.ndarray:
    return normalize(np.mean(np.stack([np.asarray(v, dtype=np.float32) for v in vectors]), axis=0))


def normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
