"""Quality stats of decoded frames (numpy and OpenCV only).

A decode worker (media/process.py) measures; filters/media.py judges the numbers against
media.quality (per source and task), so thresholds can be retuned without decoding again.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from schemas.config import MediaQualityConfig


def analysis_rgb(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """The frame scaled (area average) so its short side is short_side; never upscaled."""
    import cv2

    h, w = rgb.shape[:2]
    s = short_side / min(h, w)
    if s < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def hsv_histogram(rgb: np.ndarray) -> np.ndarray:
    """Normalised 16x4x4 HSV histogram (OpenCV ranges)."""
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    return hist / max(1.0, float(hist.sum()))


def sharpness(gray: np.ndarray, tile: int, top_fraction: float) -> float:
    """How sharp the sharpest part of the picture is: the mean Laplacian variance of the
    sharpest `top_fraction` of tiles (at least one) on a grid covering the whole frame.
    A whole-frame Laplacian variance reads the flat regions of charts, slides, documents
    and graphics as blur; a blurred picture, by contrast, has no sharp tile anywhere."""
    import cv2

    lap = cv2.Laplacian(gray, cv2.CV_32F)
    h, w = lap.shape
    rows = np.array_split(np.arange(h), max(1, round(h / tile)))
    cols = np.array_split(np.arange(w), max(1, round(w / tile)))
    variances = sorted((float(lap[r[0]:r[-1] + 1, c[0]:c[-1] + 1].var()) for r in rows for c in cols),
                       reverse=True)
    k = max(1, round(len(variances) * top_fraction))
    return float(np.mean(variances[:k]))


def peak_tile_mean(diff: np.ndarray, tile: int) -> float:
    """The largest mean over tile x tile blocks of a difference image (area-averaged tiles; a
    partial last row / column is averaged too): where the picture moves most. A pointer over a
    still slide moves 0.05% of the frame but most of one tile."""
    import cv2

    h, w = diff.shape[:2]
    tiles = cv2.resize(diff.astype(np.float32), (max(1, round(w / tile)), max(1, round(h / tile))),
                       interpolation=cv2.INTER_AREA)
    return float(tiles.max())


def frame_stats(frames: list, qc: MediaQualityConfig, video: bool,
                source_short_side: Optional[int] = None) -> dict[str, Optional[float]]:
    """brightness, sharpness (and for videos motion, motion_peak, scene_changes) of RGB frames of one size,
    measured on analysis frames: short side media.quality.analysis_short_side, or the
    source's short side when that is smaller (a small source that smart_resize scaled up is
    judged at its own resolution: upscaling is not blur)."""
    import cv2

    short = min(qc.analysis_short_side, source_short_side or qc.analysis_short_side)
    small = [analysis_rgb(f, short) for f in frames]
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small]
    stats: dict[str, Optional[float]] = {
        "brightness": round(float(np.mean([g.mean() for g in grays])) / 255.0, 6),
        "sharpness": round(float(np.median([sharpness(g, qc.sharpness_tile_px, qc.sharpness_top_fraction)
                                            for g in grays])), 6),
    }
    if video:
        diffs = [cv2.absdiff(a, b) for a, b in zip(grays, grays[1:])]
        stats["motion"] = round(float(np.mean([d.mean() for d in diffs])) / 255.0, 6) if diffs else None
        stats["motion_peak"] = (round(float(np.mean([peak_tile_mean(d, qc.motion_tile_px) for d in diffs])) / 255.0, 6)
                                if diffs else None)
        hists = [hsv_histogram(f) for f in small]
        stats["scene_changes"] = float(sum(0.5 * float(np.abs(a - b).sum()) > qc.scene_cut_distance
                                           for a, b in zip(hists, hists[1:])))
    return stats
