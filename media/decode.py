"""Decoding media bytes: container checks, a demux-only probe, frame samplers, images.

Everything here runs inside a decode worker process (media/worker.py) unless the recipe
says `media.decode.isolation: in_process`; failures are `MediaError(reason, detail)`.

Videos
  1. `container_truncated` reads the container's own size fields (ISO BMFF boxes, the
     Matroska segment, the RIFF chunk) and names a file that ends early: truncated_media.
  2. `probe_video` opens the container with PyAV and demuxes the video stream without
     decoding: every packet's presentation timestamp, keyframe flag and decode order.
     Frame times, duration and frame rate come from these timestamps, so variable frame
     rate and edit lists are handled; nothing assumes index / fps.
  3. A sampler decodes the frames the sampling plan asks for, scales each one to its output
     size while converting to RGB (one swscale call), and applies the display rotation
     (`frame.rotation`, from the display matrix) and the pixel aspect ratio:
     - `PyAVSampler` (the CPU default). `exact` access maps each sample time to the frame
       with the nearest timestamp and decodes exactly those frames, bit-identical to a full
       decode, doing less work than one: a packet whose frame is not wanted is sent with
       `skip_frame=NONREF`, so the decoder drops it when nothing references it (H.264
       non-reference B-frames; HEVC only without temporal sub-layers, `nonref_skip_safe`),
       and when no wanted frame needs the next GOPs it seeks
       to the keyframe the next wanted frame needs (never into an open-GOP leading picture).
       `reference` (every non-reference frame skipped) and `keyframe` (keyframes only) snap
       each sample time to the nearest frame that was decoded: faster, approximate, reported
       as `timestamp_error_s`; never the default.
     - `DecordSampler`: decord's `VideoReader.get_batch` on the nearest frames by decord's
       own timestamps; on a GPU (`decord.gpu(0)`) when decord was built with CUDA (NVDEC).
       A file decord cannot read falls back to PyAV.
     `backend: auto` picks decord on a GPU and PyAV otherwise (PyAV's exact sampler is the
     faster CPU path: python -m bench.decode).
     GPU workers: PyPI's decord wheel is CPU-only. NVDEC decoding needs decord built from
     source with CUDA (`cmake .. -DUSE_CUDA=ON`, against FFmpeg 4.x development headers,
     the CUDA toolkit and the NVIDIA Video Codec SDK headers; at run time libnvcuvid from
     the driver, i.e. NVIDIA_DRIVER_CAPABILITIES including `video` in containers).
     `decord_gpu_available()` checks a device through libcuda and opens a tiny clip with
     `decord.gpu(0)`; anything short of that falls back to PyAV on the CPU.
Images
  `decode_image`: Pillow, first frame of animations (GIF, WebP), EXIF orientation applied,
  converted to RGB (transparency composited on white, as Keye's processor does; 16-bit
  scaled to 8-bit), pixel cap checked from the header before any pixel is decoded.
"""
from __future__ import annotations

import ctypes
import io
import struct
import time
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from media.sampling import nearest_frames
from schemas.reasons import Reason


class MediaError(Exception):
    """An item that cannot be used; reason is a schemas.reasons.Reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail[:500]


# --- container sniffing and truncation --------------------------------------------------------
ISO_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"moof", b"mfra", b"uuid",
                  b"styp", b"sidx", b"pnot", b"meta", b"prfl", b"junk", b"PICT"}


def sniff_container(data: bytes) -> Optional[str]:
    """The video container family the leading bytes announce, or None."""
    if len(data) >= 8 and data[4:8] in ISO_BMFF_BOXES:
        return "isobmff"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if data[:3] == b"FLV":
        return "flv"
    if data[:4] == b"OggS":
        return "ogg"
    if len(data) >= 377 and data[0] == 0x47 and data[188] == 0x47 and data[376] == 0x47:
        return "mpegts"
    if data[:4] == b"\x00\x00\x01\xba":
        return "mpegps"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def container_truncated(data: bytes) -> Optional[str]:
    """Why the container's own size fields say the file is cut short, or None."""
    kind = sniff_container(data)
    n = len(data)
    if kind == "isobmff":
        pos, seen = 0, set()
        while pos + 8 <= n:
            size, typ = struct.unpack(">I4s", data[pos:pos + 8])
            if size == 1:
                if pos + 16 > n:
                    return f"box header at {pos} cut"
                size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            elif size == 0:          # box runs to the end of the file
                size = n - pos
            if size < 8:
                return None          # not a box layout we understand: let the demuxer judge
            if pos + size > n:
                return f"'{typ.decode('latin-1')}' box at {pos} needs {size} bytes, file has {n - pos}"
            seen.add(typ)
            pos += size
        if pos != n:
            return f"{n - pos} trailing bytes cut inside a box header"
        if b"moov" not in seen and b"moof" not in seen:
            return "no 'moov' box (the index at the end of the file is missing)"
        return None
    if kind == "matroska":
        try:
            pos = 4
            size, pos = _ebml_vint(data, pos)           # EBML header
            pos += size
            if data[pos:pos + 4] != b"\x18\x53\x80\x67":
                return None
            seg_size, body = _ebml_vint(data, pos + 4, unknown_ok=True)
        except IndexError:
            return "cut inside the EBML header"
        if seg_size is not None and body + seg_size > n:
            return f"Matroska segment needs {seg_size} bytes, file has {n - body}"
        return None
    if kind == "avi":
        riff = struct.unpack("<I", data[4:8])[0]
        if 8 + riff > n:
            return f"RIFF chunk needs {riff} bytes, file has {n - 8}"
    return None


def _ebml_vint(data: bytes, pos: int, unknown_ok: bool = False) -> tuple[Optional[int], int]:
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise IndexError("bad EBML size")
    value = first & (0xFF >> length)
    for b in data[pos + 1:pos + length]:
        value = (value << 8) | b
    if pos + length > len(data):
        raise IndexError("cut")
    if unknown_ok and value == (1 << (7 * length)) - 1:
        return None, pos + length        # unknown size (live streams)
    return value, pos + length


# --- probe ------------------------------------------------------------------------------------
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


def _open(data: bytes):
    import av

    return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")


def _video_stream(container):
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
        container = _open(data)
    except av.FFmpegError as e:
        if sniff_container(data):
            raise MediaError(Reason.UNDECODABLE, f"{sniff_container(data)} container: {e}") from None
        raise MediaError(Reason.NOT_A_VIDEO, f"no media container FFmpeg knows: {e}") from None
    with container:
        fmt = container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):      # FFmpeg's still-image demuxers
            raise MediaError(Reason.NOT_A_VIDEO, f"a still image ({fmt}), not a video")
        stream = _video_stream(container)
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
        times = (pts - pts[0]).astype(np.float64) * float(tb)
        if len(times) > 1:
            frame_s = float(np.median(np.diff(times)))
        elif durations:
            frame_s = durations[0] * float(tb)
        else:
            rate = stream.average_rate or stream.guessed_rate
            frame_s = float(1 / rate) if rate else 0.0
        duration = float(times[-1]) + frame_s
        fps = len(pts) / duration if duration > 0 else float(stream.average_rate or 0.0)
        declared = _declared_duration(container, stream)
        if declared and duration < 0.5 * declared and declared - duration > 1.0:
            raise MediaError(Reason.TRUNCATED_MEDIA, f"{fmt} declares {declared:.2f} s of video, "
                                                     f"its frames cover {duration:.2f} s")
        codec = getattr(cc.codec, "canonical_name", None) or cc.name
        return VideoInfo(container=fmt, codec=codec, coded_width=w, coded_height=h,
                         sar=float(sar) if sar else 1.0, time_base=Fraction(tb), pts=pts, times=times,
                         decode_pts=decode_pts, decode_key=decode_key, duration_s=duration, fps=fps,
                         demux_errors=errors, nonref_skip_safe=nonref_skip_safe(codec, cc.extradata))


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


# --- sampled frames ---------------------------------------------------------------------------
@dataclass
class Sampled:
    """Frames for the sample times asked, in that order (a frame may repeat)."""

    frames: list                      # RGB uint8 (h, w, 3), display orientation
    times: list                       # seconds from the first frame, of the frames delivered
    targets: list                     # seconds asked for
    rotation: int = 0                 # display rotation applied, degrees counter-clockwise
    decode_errors: int = 0
    decode_s: float = 0.0             # demux + decode + sample, conversion excluded
    convert_s: float = 0.0            # scaling + RGB conversion + rotation
    backend: str = ""
    access: str = "exact"
    notes: list = field(default_factory=list)

    @property
    def timestamp_error_s(self) -> float:
        return float(max((abs(a - b) for a, b in zip(self.times, self.targets)), default=0.0))


def _rotation_of(frame) -> int:
    r = getattr(frame, "rotation", 0) or 0
    return int(round(r / 90.0)) * 90 % 360


class _Converter:
    """Frame -> RGB array: scaled to size_hw (coded orientation, pixel aspect applied), then
    turned by the display rotation (so a 90 degree rotation gives a (w, h) array). Timed.
    display=True: size_hw is in display orientation (swapped once the rotation is known), so
    the caller gets size_hw exactly without decoding twice."""

    def __init__(self, size_hw: tuple[int, int], display: bool = False) -> None:
        self.size = size_hw
        self.display = display
        self.rotation: Optional[int] = None
        self.seconds = 0.0

    def __call__(self, frame) -> np.ndarray:
        t0 = time.perf_counter()
        if self.rotation is None:
            self.rotation = _rotation_of(frame)
            if self.display and self.rotation in (90, 270):
                self.size = (self.size[1], self.size[0])
        h, w = self.size
        kwargs = {}
        if int(getattr(frame, "color_range", 0) or 0) == 2:    # full-range YUV flagged on a yuv420p frame
            kwargs["src_color_range"] = "JPEG"
        arr = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="BICUBIC",
                               dst_color_range="JPEG", **kwargs)
        if self.rotation:
            arr = np.ascontiguousarray(np.rot90(arr, k=self.rotation // 90))
        self.seconds += time.perf_counter() - t0
        return arr


class PyAVSampler:
    name = "pyav"

    def __init__(self, threads: int = 2, seek: bool = True, min_seek_packets: int = 8) -> None:
        self.threads = threads
        self.seek = seek
        self.min_seek_packets = min_seek_packets

    def sample(self, data: bytes, info: VideoInfo, targets: Sequence[float], size_hw: tuple[int, int],
               access: str = "exact", display: bool = False) -> Sampled:
        """display: size_hw is in display orientation (see _Converter)."""
        t0 = time.perf_counter()
        conv = _Converter(size_hw, display)
        out: Optional[Sampled] = None
        if access == "exact" and info.decode_pts and info.decode_pts[0] is not None:
            out = self._exact(data, info, targets, conv)
        if out is None:        # approximate access, or exact frames the decoder never produced
            conv = _Converter(size_hw, display)
            skip = {"exact": "DEFAULT", "reference": "NONREF", "keyframe": "NONKEY"}[access]
            out = self._snap(data, info, targets, conv, skip)
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
        with _open(data) as container:
            stream = _video_stream(container)
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
        tb = float(info.time_base)
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

        with _open(data) as container:
            stream = _video_stream(container)
            cc = self._decoder(container, stream)
            cc.skip_frame = skip
            last_t = None
            timed = bool(info.decode_pts) and info.decode_pts[0] is not None   # else: count frames
            for f in frames_of(container, stream, cc):
                if timed and f.pts is not None:
                    t = (f.pts - first_pts) * tb
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


class DecordSampler:
    """decord's VideoReader; on a GPU when decord has CUDA (NVDEC)."""

    name = "decord"

    def __init__(self, threads: int = 2, gpu: bool = False) -> None:
        self.threads = threads
        self.gpu = gpu

    def sample(self, data: bytes, info: VideoInfo, targets: Sequence[float], size_hw: tuple[int, int],
               access: str = "exact") -> Sampled:
        import decord

        t0 = time.perf_counter()
        ctx = decord.gpu(0) if self.gpu else decord.cpu(0)
        vr = decord.VideoReader(io.BytesIO(data), ctx=ctx, num_threads=self.threads)
        n = len(vr)
        if n == 0:
            raise MediaError(Reason.UNDECODABLE, "decord found no frames")
        stamps = np.asarray(vr.get_frame_timestamp(np.arange(n)))[:, 0].astype(np.float64)
        order = np.argsort(stamps, kind="stable")
        times = stamps[order] - stamps[order[0]]
        idx = order[nearest_frames(times, targets)]
        batch = vr.get_batch([int(i) for i in idx]).asnumpy()
        decode_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        h, w = size_hw
        ch, cw = info.coded_height, info.coded_width
        rotation = 0
        if batch.shape[1:3] == (cw, ch) and cw != ch:     # decord applied a 90/270 display rotation
            h, w = w, h
            rotation = 90
        frames = [resize_rgb(fr, (h, w)) for fr in batch]
        del vr
        return Sampled(frames=frames, times=[float(stamps[i] - stamps[order[0]]) for i in idx],
                       targets=[float(t) for t in targets], rotation=rotation,
                       decode_s=decode_s, convert_s=time.perf_counter() - t1, backend=self.name, access=access)


# --- backend choice ---------------------------------------------------------------------------
_GPU_DECORD: Optional[bool] = None


def cuda_device_count() -> int:
    """NVIDIA devices the driver reports (0 without a driver); no torch needed."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def decord_gpu_available() -> bool:
    """True when decord imports, a CUDA device exists and decord was built with CUDA."""
    global _GPU_DECORD
    if _GPU_DECORD is None:
        _GPU_DECORD = False
        if cuda_device_count() > 0:
            try:
                import decord

                decord.VideoReader(io.BytesIO(_tiny_h264()), ctx=decord.gpu(0))
                _GPU_DECORD = True
            except Exception:  # noqa: BLE001 - a CPU-only build raises DECORDError
                _GPU_DECORD = False
    return _GPU_DECORD


def _tiny_h264() -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 100, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def make_sampler(backend: str, threads: int):
    """The sampler for media.decode.backend (auto: decord on a GPU, else PyAV)."""
    if backend == "pyav":
        return PyAVSampler(threads)
    if backend == "decord":
        return DecordSampler(threads, gpu=decord_gpu_available())
    if decord_gpu_available():
        return DecordSampler(threads, gpu=True)
    return PyAVSampler(threads)


def sample_video(data: bytes, info: VideoInfo, targets: Sequence[float], size_hw: tuple[int, int],
                 sampler, access: str) -> Sampled:
    """Sample with the chosen sampler; decord failures fall back to PyAV (exact access)."""
    import av

    try:
        return sampler.sample(data, info, targets, size_hw, access)
    except MediaError:
        raise
    except Exception as e:  # noqa: BLE001 - decord raises its own error types; PyAV FFmpegError
        if isinstance(sampler, DecordSampler):
            out = PyAVSampler(sampler.threads).sample(data, info, targets, size_hw, access)
            out.notes.append(f"decord failed ({type(e).__name__}: {str(e)[:120]}); PyAV used")
            return out
        if isinstance(e, av.FFmpegError):
            raise MediaError(Reason.UNDECODABLE, f"{info.container}/{info.codec}: {e}") from None
        raise


# --- images -----------------------------------------------------------------------------------
LOSSLESS_IMAGE_FORMATS = {"PNG", "GIF", "BMP", "TIFF", "PPM", "TGA", "ICO", "QOI"}


@dataclass
class DecodedImage:
    rgb: np.ndarray
    format: str             # Pillow's format name: JPEG, PNG, WEBP, GIF, ...
    lossless: bool          # the source format is lossless (re-encode as PNG, not JPEG)


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """RGB uint8 (h, w, 3): first frame, EXIF orientation applied; MediaError if unusable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise MediaError(Reason.NOT_AN_IMAGE, "no image format Pillow knows") from None
        except Image.DecompressionBombError as e:
            raise MediaError(Reason.TOO_MANY_PIXELS, str(e)) from None
        except Exception as e:  # noqa: BLE001 - header parse errors of the plugins
            raise MediaError(Reason.UNDECODABLE, f"{type(e).__name__}: {e}") from None
        with im:
            fmt = im.format or "?"
            w, h = im.size
            if w * h > max_pixels:
                raise MediaError(Reason.TOO_MANY_PIXELS, f"{w}x{h} {fmt} > {max_pixels} pixels")
            try:
                im.seek(0)
                im.load()
            except OSError as e:
                if "truncated" in str(e).lower():
                    raise MediaError(Reason.TRUNCATED_MEDIA, f"{fmt}: {e}") from None
                raise MediaError(Reason.UNDECODABLE, f"{fmt}: {e}") from None
            except Exception as e:  # noqa: BLE001
                raise MediaError(Reason.UNDECODABLE, f"{fmt}: {type(e).__name__}: {e}") from None
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
    return DecodedImage(rgb=rgb, format=fmt, lossless=fmt in LOSSLESS_IMAGE_FORMATS)


def _to_rgb(im) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"))


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, 4:2:0 (OpenCV's libjpeg-turbo: ~30% faster than Pillow here)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-average down, bicubic up (the image path; video frames are scaled by swscale)."""
    import cv2

    h, w = size_hw
    if rgb.shape[:2] == (h, w):
        return rgb
    interp = cv2.INTER_AREA if rgb.shape[0] * rgb.shape[1] >= h * w else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(rgb, (w, h), interpolation=interp))


def frames_at(data: bytes, timestamps: Sequence[float], size_hw: Optional[tuple[int, int]] = None,
              threads: int = 2) -> list[np.ndarray]:
    """Frames of a video at the given times (seconds from its first frame), exact access,
    scaled to size_hw (display orientation; None: source size): how `media.frames.item_frames`
    reads items whose frames were not kept as JPEG members."""
    info = probe_video(data, 1 << 62)
    return PyAVSampler(threads).sample(data, info, list(timestamps), size_hw or info.display_size(), "exact",
                                       display=size_hw is not None).frames
