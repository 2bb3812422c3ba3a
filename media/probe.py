"""Probing a video: demux the video stream without decoding (PyAV).

`probe_video` first asks `container_truncated` (media/container.py), then opens the
container and demuxes the video stream: every packet's presentation timestamp, keyframe flag
and decode order. Frame times, duration and frame rate come from these timestamps, so
variable frame rate and edit lists are handled; nothing assumes index / fps.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np

from media.container import container_truncated, sniff_container
from media.errors import MediaError
from schemas.reasons import Reason


@dataclass
class VideoInfo:
    """What the demuxer says about the video stream, before any decoding."""

    container: str
    codec: str
    coded_width: int
    coded_height: int
    sar: float                          # pixel aspect ratio (1.0 square)
    time_base: Fraction
    pts: np.ndarray                     # presentation timestamps of the frames, sorted (stream time base)
    times: np.ndarray                   # the same in seconds from the first frame
    decode_pts: list                    # packet pts in decode order (None where unknown)
    decode_key: list                    # keyframe flag per packet, decode order
    duration_s: float
    fps: float
    demux_errors: int = 0
    nonref_skip_safe: bool = False      # dropping non-reference frames cannot change any other frame

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def span_s(self) -> float:
        return float(self.times[-1]) if len(self.times) else 0.0

    def display_size(self) -> tuple[int, int]:
        """(h, w) with the pixel aspect ratio applied (rotation is known only once decoding starts)."""
        h, w = self.coded_height, self.coded_width
        if self.sar and abs(self.sar - 1.0) > 1e-3:
            w = max(1, round(w * self.sar))
        return h, w


def open_container(data: bytes):
    import av

    return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")


def video_stream(container):
    for s in container.streams.video:
        if not (s.disposition and "attached_pic" in str(s.disposition).lower()):
            return s
    return None


def probe_video(data: bytes, max_pixels: int) -> VideoInfo:
    """Demux the video stream (no decoding); MediaError for anything that is not a usable video."""
    import av

    why = container_truncated(data)
    if why:
        raise MediaError(Reason.TRUNCATED_MEDIA, why)
    try:
        container = open_container(data)
    except av.FFmpegError as e:
        if sniff_container(data):
            raise MediaError(Reason.UNDECODABLE, f"{sniff_container(data)} container: {e}") from None
        raise MediaError(Reason.NOT_A_VIDEO, f"no media container FFmpeg knows: {e}") from None
    with container:
        fmt = container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):      # FFmpeg's still-image demuxers
            raise MediaError(Reason.NOT_A_VIDEO, f"a still image ({fmt}), not a video")
        stream = video_stream(container)
        if stream is None:
            kinds = sorted({s.type for s in container.streams})
            raise MediaError(Reason.NO_VIDEO_STREAM, f"{fmt} container with streams {kinds or 'none'}")
        cc = stream.codec_context
        if cc is None:
            raise MediaError(Reason.UNDECODABLE, f"no decoder for stream codec in {fmt}")
        w, h = cc.width, cc.height
        if w < 1 or h < 1:
            raise MediaError(Reason.UNDECODABLE, f"{fmt}/{cc.name}: no frame size in the stream header")
        if w * h > max_pixels:
            raise MediaError(Reason.TOO_MANY_PIXELS, f"{w}x{h} frames > {max_pixels} pixels")
        sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
        tb = stream.time_base or Fraction(1, 90000)
        decode_pts, decode_key, shown, durations = [], [], [], []
        errors = 0
        try:
            for p in container.demux(stream):
                if p.size == 0:
                    continue
                decode_pts.append(p.pts)
                decode_key.append(bool(p.is_keyframe))
                if p.pts is not None and not p.is_discard:
                    shown.append(p.pts)
                    if p.duration:
                        durations.append(p.duration)
        except av.FFmpegError:
            errors += 1
        if not decode_pts:
            raise MediaError(Reason.UNDECODABLE, f"{fmt}/{cc.name}: no video packets")
        if not shown:     # no timestamps at all: pretend a constant rate (decoding will tell)
            rate = stream.average_rate or stream.guessed_rate or 25
            tb = Fraction(1, 1) / Fraction(rate)
            shown = list(range(len(decode_pts)))
            decode_pts = [None] * len(decode_pts)
        pts = np.unique(np.asarray(shown, dtype=np.int64))
        tb = Fraction(tb)
        ticks = pts - pts[0]
        times = ticks_to_seconds(ticks, tb)
        # the duration in exact arithmetic (integer ticks x time base), rounded once at the
        # end: summing float seconds gives 3.9999999999999996 s for 96 frames at 24 fps
        if len(pts) > 1:
            frame = Fraction(int(round(float(np.median(np.diff(ticks))) * 2)), 2) * tb   # a median may be a half tick
        elif durations:
            frame = durations[0] * tb
        else:
            rate = stream.average_rate or stream.guessed_rate
            frame = 1 / Fraction(rate) if rate else Fraction(0)
        exact = int(ticks[-1]) * tb + frame
        duration = float(exact)
        fps = float(len(pts) / exact) if exact > 0 else float(stream.average_rate or 0.0)
        declared = _declared_duration(container, stream)
        if declared and duration < 0.5 * declared and declared - duration > 1.0:
            raise MediaError(Reason.TRUNCATED_MEDIA, f"{fmt} declares {declared:.2f} s of video, "
                                                     f"its frames cover {duration:.2f} s")
        codec = getattr(cc.codec, "canonical_name", None) or cc.name
        return VideoInfo(container=fmt, codec=codec, coded_width=w, coded_height=h,
                         sar=float(sar) if sar else 1.0, time_base=tb, pts=pts, times=times,
                         decode_pts=decode_pts, decode_key=decode_key, duration_s=duration, fps=fps,
                         demux_errors=errors, nonref_skip_safe=nonref_skip_safe(codec, cc.extradata))


def ticks_to_seconds(ticks, tb: Fraction) -> np.ndarray:
    """Seconds of integer timestamps, each correctly rounded: (ticks x numerator) / denominator
    while the product is exact in float64, else through Fraction. Never ticks x float(tb),
    whose rounded 1/denominator makes 4 s read 3.9999999999999996 s."""
    t = np.asarray(ticks, dtype=np.int64)
    if int(np.abs(t).max(initial=0)) * tb.numerator < 2 ** 53:
        return t.astype(np.float64) * tb.numerator / tb.denominator
    return np.array([float(int(x) * tb) for x in t], dtype=np.float64)


# Codecs whose "non-reference" frames are never referenced by any other frame, so a decoder
# told to drop them (skip_frame=NONREF) leaves every other frame bit-identical. HEVC only
# without temporal sub-layers: there a sub-layer non-reference picture (TRAIL_N, ...) may
# still be referenced from a higher sub-layer.
NONREF_SAFE_CODECS = {"h264", "mpeg4", "mpeg2video", "mpeg1video", "h263", "vp8", "vp9", "av1"}


def nonref_skip_safe(codec: str, extradata: Optional[bytes]) -> bool:
    if codec in NONREF_SAFE_CODECS:
        return True
    if codec == "hevc" and extradata and len(extradata) >= 23 and extradata[0] == 1:
        return (extradata[21] >> 3) & 7 == 1          # hvcC numTemporalLayers
    return False


def _declared_duration(container, stream) -> Optional[float]:
    """Seconds of video the file's header promises: the video stream's own duration, or the
    container's when the video is its only stream (with audio it may be the audio's)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None
