"""One media item, bytes in, model-ready frames out: what a decode worker runs.

probe -> plan (frame count, sample times, size) -> decode and scale the sampled frames ->
slow-fast typing and sizes (mode slow_fast) -> quality stats -> encode members. The result
is plain data (`ItemResult`), small enough to send back from a worker process: the encoded
frames, the numbers for `MediaItem`, the stats, and timings (timings never go into rows:
rows must be byte-for-byte reproducible).

Failures that are the item's fault come back as `ItemResult.reason` (never an exception), with
whatever stats were measured before the failure.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from media.backend import make_sampler, sample_video
from media.errors import MediaError
from media.images import decode_image, encode_jpeg, encode_png, resize_rgb
from media.probe import probe_video
from media.sampling import (AspectRatioError, aspect_ratio, classify_frames, hsv_patches, image_size,
                            plan_video, similarity_size, slow_fast_sizes, tokens, video_tokens)
from media.stats import frame_stats
from schemas.config import MediaConfig
from schemas.reasons import Reason


@dataclass
class ItemResult:
    kind: str
    reason: Optional[str] = None            # a Reason value when the item cannot be used
    detail: str = ""
    codec: Optional[str] = None
    source_width: Optional[int] = None
    source_height: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fast_width: Optional[int] = None
    fast_height: Optional[int] = None
    duration_s: Optional[float] = None
    fps: Optional[float] = None
    frame_timestamps: list = field(default_factory=list)
    frame_types: list = field(default_factory=list)
    visual_tokens: int = 0
    encoded: list = field(default_factory=list)      # member bytes, one per frame (one for an image)
    ext: str = "jpg"                                 # extension of the encoded members
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)      # seconds: decode, resize, stats, encode, total
    backend: str = ""
    notes: list = field(default_factory=list)


@dataclass(frozen=True)
class ItemTask:
    """What a worker needs for one item (picklable)."""

    kind: str
    data: bytes
    cfg: MediaConfig
    fixed_frames: Optional[int] = None
    encode: bool = True          # False when only the original bytes are kept
    fault: Optional[str] = None  # test hook, honoured only in worker processes: abort | segv | hang | raise


def process_item(task: ItemTask) -> ItemResult:
    t0 = time.perf_counter()
    res = ItemResult(kind=task.kind)
    try:
        if task.kind == "image":
            _image(task, res)
        else:
            _video(task, res)
    except MediaError as e:
        res.reason, res.detail = e.reason.value, e.detail
    except AspectRatioError as e:
        res.reason, res.detail = Reason.ASPECT_RATIO.value, str(e)
    except Exception as e:  # noqa: BLE001 - as the worker does: one bad file rejects its row only
        res.reason, res.detail = Reason.UNDECODABLE.value, f"{type(e).__name__}: {e}"[:500]
    res.timings["total"] = time.perf_counter() - t0
    return res


def run_fault(fault: str) -> None:
    """Misbehave on purpose (tests of the isolation: a decoder that crashes or hangs)."""
    if fault == "abort":
        os.abort()
    if fault == "segv":
        import ctypes

        ctypes.string_at(0)
    if fault == "hang":
        while True:
            time.sleep(3600)
    if fault == "raise":
        raise RuntimeError("injected failure")


def _image(task: ItemTask, res: ItemResult) -> None:
    sc, qc = task.cfg.sampling, task.cfg.quality
    t = time.perf_counter()
    img = decode_image(task.data, task.cfg.decode.max_image_pixels)
    res.timings["decode"] = time.perf_counter() - t
    res.codec = img.format.lower()
    h, w = img.rgb.shape[:2]
    res.source_width, res.source_height = w, h
    res.stats["aspect_ratio"] = aspect_ratio(h, w)
    size = image_size(h, w, sc)          # AspectRatioError above max_aspect_ratio
    t = time.perf_counter()
    rgb = resize_rgb(img.rgb, size)
    res.timings["resize"] = time.perf_counter() - t
    res.height, res.width = size
    res.visual_tokens = tokens(size, sc.patch_size)
    t = time.perf_counter()
    res.stats.update(frame_stats([rgb], qc, video=False, source_short_side=min(h, w)))
    res.timings["stats"] = time.perf_counter() - t
    if task.encode:
        t = time.perf_counter()
        if img.lossless:
            res.encoded, res.ext = [encode_png(rgb)], "png"
        else:
            res.encoded, res.ext = [encode_jpeg(rgb, task.cfg.output.jpeg_quality)], "jpg"
        res.timings["encode"] = time.perf_counter() - t


def _video(task: ItemTask, res: ItemResult) -> None:
    dc, sc, qc = task.cfg.decode, task.cfg.sampling, task.cfg.quality
    t = time.perf_counter()
    info = probe_video(task.data, dc.max_video_pixels)
    probe_s = time.perf_counter() - t
    res.codec = info.codec
    res.duration_s = round(info.duration_s, 6)
    res.fps = round(info.fps, 6)
    h, w = info.display_size()
    res.source_width, res.source_height = w, h
    res.stats["aspect_ratio"] = aspect_ratio(h, w)
    if info.duration_s > dc.max_duration_s:
        raise MediaError(Reason.VIDEO_TOO_LONG, f"{info.duration_s:.1f} s > {dc.max_duration_s:g} s")
    plan = plan_video(info.duration_s, info.span_s, info.num_frames, h, w, sc, task.fixed_frames)
    # slow_fast: the frames are compared as keye-vl-utils compares them, scaled from the source size
    similar = similarity_size(info.coded_height, info.coded_width, sc) if sc.mode == "slow_fast" else None
    sampled = sample_video(task.data, info, plan.targets, plan.size, make_sampler(dc.backend, dc.threads),
                           dc.frame_access, similarity_hw=similar)
    res.backend = sampled.backend
    res.notes.extend(sampled.notes)
    res.timings["decode"] = probe_s + sampled.decode_s
    res.timings["resize"] = sampled.convert_s
    if sampled.rotation in (90, 270):
        res.source_width, res.source_height = h, w
    frames = sampled.frames
    res.frame_timestamps = [round(x, 6) for x in sampled.times]
    res.stats["timestamp_error_s"] = round(sampled.timestamp_error_s, 6)
    res.stats["decode_errors"] = float(sampled.decode_errors + info.demux_errors)
    t = time.perf_counter()
    res.stats.update(frame_stats(frames, qc, video=True, source_short_side=min(h, w)))
    res.timings["stats"] = time.perf_counter() - t
    fh, fw = frames[0].shape[:2]
    if sc.mode == "slow_fast":
        t = time.perf_counter()
        if sampled.similarity:
            compared = sampled.similarity
        else:                    # decord: scaled from the sampled frames (within ~0.01 of Keye's similarities)
            sh, sw = similarity_size(res.source_height, res.source_width, sc)
            compared = (resize_rgb(f, (sh, sw)) for f in frames)
        patches = (hsv_patches(f, sc.patch_size) for f in compared)   # one at a time
        types = classify_frames(patches, sc)
        # sizes from the source (display) size, as Keye does; the decoded ceiling frames are
        # at least as large, so this only scales down
        slow, fast = slow_fast_sizes(res.source_height, res.source_width, types, sc)
        frames = [resize_rgb(f, slow if k == 0 else fast) for f, k in zip(frames, types)]
        res.timings["resize"] += time.perf_counter() - t
        res.frame_types = types
        (res.height, res.width), (res.fast_height, res.fast_width) = slow, fast
        res.visual_tokens = video_tokens(types, slow, fast, sc.patch_size)
    else:
        res.frame_types = [0] * len(frames)
        res.height, res.width = fh, fw
        res.visual_tokens = len(frames) * tokens((fh, fw), sc.patch_size)
    if task.encode:
        t = time.perf_counter()
        res.encoded = [encode_jpeg(np.ascontiguousarray(f), task.cfg.output.jpeg_quality) for f in frames]
        res.ext = "jpg"
        res.timings["encode"] = time.perf_counter() - t
