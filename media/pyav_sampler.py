"""The PyAV frame sampler (the CPU default) and `frames_at`.

It decodes the frames the sampling plan asks for, scales each one to its output size while
converting to RGB (one swscale call), and applies the display rotation (`frame.rotation`,
from the display matrix) and the pixel aspect ratio.

`exact` access maps each sample time to the frame with the nearest timestamp and decodes
exactly those frames, bit-identical to a full decode, doing less work than one: a packet
whose frame is not wanted is sent with `skip_frame=NONREF`, so the decoder drops it when
nothing references it (H.264 non-reference B-frames; HEVC only without temporal sub-layers,
`VideoInfo.nonref_skip_safe`), and when no wanted frame needs the next GOPs it seeks to the
keyframe the next wanted frame needs (never into an open-GOP leading picture).
`reference` (every non-reference frame skipped) and `keyframe` (keyframes only) snap each
sample time to the nearest frame that was decoded: faster, approximate, reported as
`timestamp_error_s`; never the default.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from media.errors import MediaError
from media.probe import VideoInfo, open_container, probe_video, video_stream
from media.sampled import Sampled
from media.sampling import nearest_frames
from schemas.reasons import Reason


def _rotation_of(frame) -> int:
    r = getattr(frame, "rotation", 0) or 0
    return int(round(r / 90.0)) * 90 % 360


class _Converter:
    """Frame -> RGB array: scaled to size_hw (coded orientation, pixel aspect applied), then
    turned by the display rotation (so a 90 degree rotation gives a (w, h) array). Timed.
    display=True: size_hw is in display orientation (swapped once the rotation is known), so
    the caller gets size_hw exactly without decoding twice.
    similarity_hw (coded orientation): also the frame as keye-vl-utils 1.5 compares it, the
    source-size RGB frame (as decord gives it: rotated, pixel aspect ignored) resized to
    similarity_hw by antialiased bilinear (Pillow, within one level of torch's uint8 path);
    the converter then returns (frame, similarity frame)."""

    def __init__(self, size_hw: tuple[int, int], display: bool = False,
                 similarity_hw: Optional[tuple[int, int]] = None) -> None:
        self.size = size_hw
        self.display = display
        self.similarity_hw = similarity_hw
        self.rotation: Optional[int] = None
        self.seconds = 0.0

    def __call__(self, frame):
        t0 = time.perf_counter()
        if self.rotation is None:
            self.rotation = _rotation_of(frame)
            if self.rotation in (90, 270):
                if self.display:
                    self.size = (self.size[1], self.size[0])
                if self.similarity_hw:
                    self.similarity_hw = (self.similarity_hw[1], self.similarity_hw[0])
        h, w = self.size
        kwargs = {}
        if int(getattr(frame, "color_range", 0) or 0) == 2:    # full-range YUV flagged on a yuv420p frame
            kwargs["src_color_range"] = "JPEG"
        arr = self._rotated(frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="BICUBIC",
                                             dst_color_range="JPEG", **kwargs))
        if self.similarity_hw:
            from PIL import Image

            native = self._rotated(frame.to_ndarray(format="rgb24", interpolation="BICUBIC",
                                                    dst_color_range="JPEG", **kwargs))
            sh, sw = self.similarity_hw
            similar = native if native.shape[:2] == (sh, sw) else \
                np.asarray(Image.fromarray(native).resize((sw, sh), Image.BILINEAR))
            self.seconds += time.perf_counter() - t0
            return arr, similar
        self.seconds += time.perf_counter() - t0
        return arr

    def _rotated(self, arr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(arr, k=self.rotation // 90)) if self.rotation else arr


class PyAVSampler:
    name = "pyav"

    def __init__(self, threads: int = 2, seek: bool = True, min_seek_packets: int = 8) -> None:
        self.threads = threads
        self.seek = seek
        self.min_seek_packets = min_seek_packets

    def sample(self, data: bytes, info: VideoInfo, targets: Sequence[float], size_hw: tuple[int, int],
               access: str = "exact", display: bool = False,
               similarity_hw: Optional[tuple[int, int]] = None) -> Sampled:
        """display: size_hw is in display orientation; similarity_hw: also fill
        `Sampled.similarity` (see _Converter)."""
        t0 = time.perf_counter()
        conv = _Converter(size_hw, display, similarity_hw)
        out: Optional[Sampled] = None
        if access == "exact" and info.decode_pts and info.decode_pts[0] is not None:
            out = self._exact(data, info, targets, conv)
        if out is None:        # approximate access, or exact frames the decoder never produced
            conv = _Converter(size_hw, display, similarity_hw)
            skip = {"exact": "DEFAULT", "reference": "NONREF", "keyframe": "NONKEY"}[access]
            out = self._snap(data, info, targets, conv, skip)
        if similarity_hw:
            out.similarity = [pair[1] for pair in out.frames]
            out.frames = [pair[0] for pair in out.frames]
        out.access = access
        out.rotation = conv.rotation or 0
        out.convert_s = conv.seconds
        out.decode_s = time.perf_counter() - t0 - conv.seconds
        out.backend = self.name
        return out

    def _decoder(self, container, stream):
        cc = stream.codec_context
        cc.thread_type = "AUTO"
        cc.thread_count = self.threads
        return cc

    def _exact(self, data: bytes, info: VideoInfo, targets: Sequence[float], conv: _Converter) -> Optional[Sampled]:
        """The nearest frame to each target, decoding as little as exactness allows; None if
        some wanted frame never came out of the decoder (then the caller decodes everything)."""
        import av

        idx = nearest_frames(info.times, targets)
        wanted_pts = [int(info.pts[i]) for i in idx]
        remaining = set(wanted_pts)
        got: dict[int, np.ndarray] = {}
        pos_of = {p: i for i, p in enumerate(info.decode_pts) if p is not None}
        key_idx = [i for i, k in enumerate(info.decode_key) if k]
        start_of = {w: self._gop_start(pos_of[w], w, info, key_idx) for w in remaining if w in pos_of}
        errors = 0
        seek_ok = self.seek and len(start_of) == len(remaining)
        with open_container(data) as container:
            stream = video_stream(container)
            cc = self._decoder(container, stream)
            packets = container.demux(stream)
            while remaining:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError:
                    errors += 1
                    break
                i = pos_of.get(packet.pts)
                if seek_ok and packet.is_keyframe and i is not None:
                    nxt = min(start_of[w] for w in remaining)
                    if nxt - i >= self.min_seek_packets:
                        target_pts = info.decode_pts[nxt]
                        container.seek(target_pts, stream=stream, backward=True, any_frame=False)
                        cc.flush_buffers()
                        packets = container.demux(stream)
                        first = next(packets, None)
                        landed = pos_of.get(first.pts) if first is not None else None
                        if landed is None or landed > nxt:
                            return None      # the index did not take us where exactness needs
                        packet = first
                if packet.size and info.nonref_skip_safe:
                    cc.skip_frame = "DEFAULT" if packet.pts in remaining else "NONREF"
                errors += self._feed(cc, packet if packet.size else None, remaining, got, conv)
            if remaining:
                cc.skip_frame = "DEFAULT"
                errors += self._feed(cc, None, remaining, got, conv)
        if remaining:
            return None
        frames = [got[p] for p in wanted_pts]
        times = [float(info.times[i]) for i in idx]
        return Sampled(frames=frames, times=times, targets=[float(t) for t in targets], decode_errors=errors)

    @staticmethod
    def _gop_start(pos: int, pts: int, info: VideoInfo, key_idx: list) -> int:
        """Decode index of the keyframe to start from for the frame at decode index pos: the
        last keyframe before it whose own time is not later (open-GOP leading pictures
        need the GOP before)."""
        import bisect

        k = bisect.bisect_right(key_idx, pos) - 1
        while k > 0 and (info.decode_pts[key_idx[k]] is None or info.decode_pts[key_idx[k]] > pts):
            k -= 1
        return key_idx[k] if k >= 0 else 0

    @staticmethod
    def _feed(cc, packet, remaining: set, got: dict, conv: _Converter) -> int:
        import av

        try:
            frames = cc.decode(packet)
        except av.FFmpegError:
            return 1
        for f in frames:
            if f.pts in remaining:
                got[f.pts] = conv(f)
                remaining.discard(f.pts)
        return 0

    def _snap(self, data: bytes, info: VideoInfo, targets: Sequence[float], conv: _Converter,
              skip: str) -> Sampled:
        """Decode in presentation order and give each target the nearest decoded frame."""
        import av

        order = np.argsort(np.asarray(targets, dtype=np.float64), kind="stable")
        tgt = [float(targets[i]) for i in order]
        n = len(tgt)
        chosen: list = [None] * n
        cache: dict = {}
        tb = info.time_base
        first_pts = int(info.pts[0])
        errors = 0
        prev = None          # (time, frame)
        k = 0

        def take(tf):
            key = tf[0]             # the frame's time (frame objects are recycled: no id())
            if key not in cache:
                cache[key] = (tf[0], conv(tf[1]))
            return cache[key]

        def frames_of(container, stream, cc):
            nonlocal errors
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except av.FFmpegError:
                    errors += 1
                    return
                try:
                    yield from cc.decode(packet if packet.size else None)
                except av.FFmpegError:
                    errors += 1

        with open_container(data) as container:
            stream = video_stream(container)
            cc = self._decoder(container, stream)
            cc.skip_frame = skip
            last_t = None
            timed = bool(info.decode_pts) and info.decode_pts[0] is not None   # else: count frames
            for f in frames_of(container, stream, cc):
                if timed and f.pts is not None:
                    t = (f.pts - first_pts) * tb.numerator / tb.denominator   # as probe's ticks_to_seconds
                else:
                    t = last_t + 1.0 / max(info.fps, 1e-6) if last_t is not None else 0.0
                last_t = t
                cur = (t, f)
                while k < n and tgt[k] <= t:
                    use_prev = prev is not None and tgt[k] - prev[0] <= t - tgt[k]
                    chosen[k] = take(prev if use_prev else cur)
                    k += 1
                prev = cur
                if k == n:
                    break
            if prev is None:
                raise MediaError(Reason.UNDECODABLE, f"{info.container}/{info.codec}: no frame decoded "
                                                     f"({errors} decoder errors)")
            while k < n:
                chosen[k] = take(prev)
                k += 1
            cache.clear()
        frames: list = [None] * n
        times: list = [0.0] * n
        for rank, i in enumerate(order):
            times[i], frames[i] = chosen[rank]
        return Sampled(frames=frames, times=[float(t) for t in times], targets=[float(t) for t in targets],
                       decode_errors=errors)


def frames_at(data: bytes, timestamps: Sequence[float], size_hw: Optional[tuple[int, int]] = None,
              threads: int = 2) -> list[np.ndarray]:
    """Frames of a video at the given times (seconds from its first frame), exact access,
    scaled to size_hw (display orientation; None: source size): how `media.frames.item_frames`
    reads items whose frames were not kept as JPEG members."""
    info = probe_video(data, 1 << 62)
    return PyAVSampler(threads).sample(data, info, list(timestamps), size_hw or info.display_size(), "exact",
                                       display=size_hw is not None).frames
