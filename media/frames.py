"""Decoded pixels of a media item, for every stage that looks at images or frames.

Contract with the media stage: after it runs, `MediaItem.members` lists, in order, the
WebDataset members holding the item's visual content: one image for an image item, the
sampled frames (JPEG, one per `frame_timestamps` entry) for a video item. Scoring, pHash and
embedding stages call `item_frames` and never decode containers themselves.
"""
from __future__ import annotations

import io

import numpy as np

from schemas.sample import Sample

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts")


def decode_image(data: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3), EXIF orientation applied, first frame of animations."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def item_frames(sample: Sample, index: int) -> list[np.ndarray]:
    """The item's images (one) or sampled frames (many), decoded to RGB arrays."""
    item = sample.media[index]
    frames = []
    for name in item.members:
        if name.lower().endswith(VIDEO_SUFFIXES):
            raise ValueError(f"{sample.id}: media[{index}] is an undecoded video ({name}); "
                             "frames come from the media stage's decoder")
        frames.append(decode_image(sample.blobs[name]))
    return frames
