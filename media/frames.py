"""Decoded pixels of a media item, for every stage that looks at images or frames.

Contract with the media stage (filters/media.py). After it runs, for item `i` of row `KEY`:
  - `MediaItem.members` lists, in order, the WebDataset members with the item's visual
    content. With `media.output.keep: frames` or `both` (the default is frames):
      image: one member, the image at the size the model sees it (`width` x `height`),
             `KEY.i.000.jpg` (`.png` when the source format is lossless);
      video: the sampled frames as JPEG, `KEY.i.NNN.jpg`, one per `frame_timestamps` entry,
             in that order; slow frames are `width` x `height`, fast frames (slow_fast mode,
             `frame_types` 1) `fast_width` x `fast_height`.
    With `keep: original`: one member, the source bytes `KEY.i.<ext>`, for videos as well.
  - `MediaItem.source_member` names the member with the source bytes when they were kept
    (`original`, `both`), else None.
  - `Sample.blobs` holds those members' bytes, keyed by member name.
Scoring, pHash and embedding stages call `item_frames` and never decode containers
themselves; it gives the same frames whichever way they were stored.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from schemas.sample import MediaItem, Sample

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".gif", ".flv")


def decode_image(data: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3): media.images' decoder without a pixel cap, so every stage
    sees the pixels the media stage saw (alpha on white, 16-bit scaled, EXIF, first frame)."""
    from media.images import decode_image as decode

    return decode(data, 1 << 62).rgb


def item_frames(sample: Sample, index: int, indices: Optional[Sequence[int]] = None) -> list[np.ndarray]:
    """The item's image (one) or sampled frames (many), decoded to RGB arrays; `indices`
    (ascending) picks some of the frames, and only those are decoded.

    Frames stored as image members are decoded; a video kept only as its source bytes is
    decoded at its `frame_timestamps` (exact frame access), each frame scaled to its
    type's size, so the result matches what `keep: frames` would have stored (up to JPEG).
    """
    item = sample.media[index]
    if _source_only(item):
        from media.images import resize_rgb
        from media.pyav_sampler import frames_at

        if not item.frame_timestamps:
            raise UndecodedVideo(f"{sample.id}: media[{index}] has no sampled frames; run the media stage first")
        picked = range(len(item.frame_timestamps)) if indices is None else indices
        types = item.frame_types or [0] * len(item.frame_timestamps)
        frames = frames_at(sample.blobs[item.members[0]], [item.frame_timestamps[i] for i in picked],
                           (item.height, item.width))
        fast = (item.fast_height, item.fast_width)
        return [resize_rgb(f, fast) if types[i] == 1 and item.fast_height else f for f, i in zip(frames, picked)]
    frames = []
    for name in item.members if indices is None else [item.members[i] for i in indices]:
        if item.kind == "video" and name.lower().endswith(VIDEO_SUFFIXES):
            raise UndecodedVideo(f"{sample.id}: media[{index}] is an undecoded video ({name}); "
                                 "frames come from the media stage's decoder")
        frames.append(decode_image(sample.blobs[name]))
    return frames


def frame_count(item: MediaItem) -> int:
    """How many frames `item_frames` gives for the item (what `indices` index)."""
    return len(item.frame_timestamps) if _source_only(item) else len(item.members)


def _source_only(item: MediaItem) -> bool:
    """A video kept only as its source bytes (`keep: original`)."""
    return item.kind == "video" and len(item.members) == 1 and item.members[0] == item.source_member


class UndecodedVideo(ValueError):
    """A video item still stored as its container, never sampled into frames by the media stage."""
