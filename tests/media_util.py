"""Test media made on the fly with PyAV and Pillow (no files in the repository, no ffmpeg CLI).

Frames carry their own identity: `index_frame(i)` is a textured frame whose mean gray level
encodes i, so a test can tell which source frame a sampled frame came from after lossy
coding and scaling (`frame_index`).
"""
from __future__ import annotations

import io
import os
from fractions import Fraction
from typing import Callable, Optional, Sequence

import numpy as np

os.environ.setdefault("SVT_LOG", "1")        # SVT-AV1: errors only

CODECS = {
    # name: (encoder, container format, pixel format, extra options)
    "h264_mp4": ("libx264", "mp4", "yuv420p", {"preset": "ultrafast", "crf": "12", "bf": "3"}),
    "h264_mov": ("libx264", "mov", "yuv420p", {"preset": "ultrafast", "crf": "12", "bf": "3"}),
    "h264_mkv": ("libx264", "matroska", "yuv420p", {"preset": "ultrafast", "crf": "12", "bf": "3"}),
    "hevc_mp4": ("libx265", "mp4", "yuv420p", {"preset": "ultrafast", "crf": "12", "x265-params": "log-level=error"}),
    "hevc10_mkv": ("libx265", "matroska", "yuv420p10le",
                   {"preset": "ultrafast", "crf": "12", "x265-params": "log-level=error"}),
    "vp9_webm": ("libvpx-vp9", "webm", "yuv420p", {"crf": "20", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}),
    "av1_mkv": ("libsvtav1", "matroska", "yuv420p", {"preset": "12", "crf": "20"}),
    "mpeg4_avi": ("mpeg4", "avi", "yuv420p", {"b": "4M", "bf": "2"}),
    "mjpeg_avi": ("mjpeg", "avi", "yuvj420p", {"b": "8M"}),
}


def quiet() -> None:
    import av

    av.logging.set_level(av.logging.PANIC)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A sharp pseudo-random checker texture in [-40, 40]."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(-40, 41, size=(h // 8 + 1, w // 8 + 1))
    return np.kron(cells, np.ones((8, 8), dtype=np.int64))[:h, :w]


def index_frame(i: int, h: int = 64, w: int = 96, step: int = 6, base: int = 60) -> np.ndarray:
    """RGB frame whose mean gray level is base + step * i (a moving texture on top)."""
    level = base + step * i
    t = np.roll(texture(h, w), shift=3 * i, axis=1)
    g = np.clip(level + t - t.mean(), 0, 255).astype(np.uint8)
    return np.dstack([g, g, g])


def frame_index(rgb: np.ndarray, step: int = 6, base: int = 60) -> int:
    return int(round((float(rgb.mean()) - base) / step))


def nearest_source(rgb: np.ndarray, sources: Sequence[np.ndarray]) -> int:
    """Index of the source frame whose mean gray level is closest (robust to coding bias)."""
    means = np.array([float(s.mean()) for s in sources])
    return int(np.abs(means - float(rgb.mean())).argmin())


def encode_video(frames: Sequence[np.ndarray], codec: str = "h264_mp4", fps: int = 10,
                 pts_ms: Optional[Sequence[int]] = None, rotation: Optional[int] = None,
                 gop: Optional[int] = None, options: Optional[dict] = None) -> bytes:
    """Encode RGB frames; pts_ms gives variable frame rate timestamps (milliseconds)."""
    import av

    quiet()
    encoder, fmt, pix, opts = CODECS[codec]
    opts = dict(opts, **(options or {}))
    if gop:
        opts["g"] = str(gop)
        if encoder == "libx264":
            opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(encoder, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix
        s.options = opts
        if pts_ms is not None:
            s.time_base = Fraction(1, 1000)
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts_ms is not None:
                f.pts = int(pts_ms[i])
                f.time_base = Fraction(1, 1000)
            else:
                f.pts = i
                f.time_base = Fraction(1, fps)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def indexed_video(n: int, codec: str = "h264_mp4", fps: int = 10, h: int = 64, w: int = 96, **kw) -> bytes:
    return encode_video([index_frame(i, h, w) for i in range(n)], codec, fps, **kw)


def video_of(fn: Callable[[int], np.ndarray], n: int, codec: str = "h264_mp4", fps: int = 10, **kw) -> bytes:
    return encode_video([fn(i) for i in range(n)], codec, fps, **kw)


def audio_only(seconds: float = 1.0, fmt: str = "mp4") -> bytes:
    import av

    quiet()
    buf = io.BytesIO()
    rate = 16000
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream("aac", rate=rate)
        s.layout = "mono"
        n = int(seconds * rate)
        t = np.arange(n) / rate
        pcm = (np.sin(2 * np.pi * 440 * t) * 0.2).astype(np.float32)[None, :]
        for start in range(0, n, 1024):
            chunk = np.ascontiguousarray(pcm[:, start:start + 1024])
            f = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            f.sample_rate = rate
            f.pts = start
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def image_bytes(rgb: np.ndarray, fmt: str = "PNG", exif_orientation: Optional[int] = None,
                mode: Optional[str] = None, **save) -> bytes:
    from PIL import Image

    im = Image.fromarray(rgb)
    if mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        save["exif"] = exif.tobytes()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def quadrant_image(h: int = 64, w: int = 96) -> np.ndarray:
    """Gray textured image with a red top-left quadrant (to check orientation)."""
    g = np.clip(128 + texture(h, w), 0, 255).astype(np.uint8)
    img = np.dstack([g, g, g])
    img[: h // 2, : w // 2] = [230, 20, 20]
    return img


def red_quadrant(rgb: np.ndarray) -> str:
    """Which quadrant of an image is the red one: tl, tr, bl or br."""
    h, w = rgb.shape[:2]
    r = rgb[..., 0].astype(int) - rgb[..., 1].astype(int)
    q = {"tl": r[: h // 2, : w // 2].mean(), "tr": r[: h // 2, w // 2:].mean(),
         "bl": r[h // 2:, : w // 2].mean(), "br": r[h // 2:, w // 2:].mean()}
    return max(q, key=q.get)


def zero_payload(mp4: bytes) -> bytes:
    """The same MP4 with the media data (the 'mdat' box body) zeroed: a valid container whose
    frames cannot be decoded."""
    import struct

    pos = 0
    out = bytearray(mp4)
    while pos + 8 <= len(mp4):
        size, typ = struct.unpack(">I4s", mp4[pos:pos + 8])
        if typ == b"mdat":
            out[pos + 8:pos + size] = bytes(size - 8)
            return bytes(out)
        pos += size
    raise ValueError("no mdat box")


# --- content for slow/fast typing and motion (HSV patch cosines separate black from colour,
# not one colour from another, so scenes are coloured blocks on black) --------------------------
def block_scene(h: int, w: int, seed: int, cell: int = 56) -> np.ndarray:
    """Random saturated blocks, about half of them black."""
    rng = np.random.default_rng(seed)
    hs, ws = h // cell + 1, w // cell + 1
    col = rng.integers(40, 256, size=(hs, ws, 3)).astype(np.uint8)
    col[rng.random((hs, ws)) < 0.5] = 0
    return np.kron(col, np.ones((cell, cell, 1), np.uint8))[:h, :w]


def scrolling(h: int, w: int, px_per_frame: int = 7, seed: int = 0) -> Callable[[int], np.ndarray]:
    """Frame i: a window over a wide block canvas, moved px_per_frame to the left each frame."""
    canvas = block_scene(h, w * 8, seed)

    def frame(i: int) -> np.ndarray:
        x = (i * px_per_frame) % (canvas.shape[1] - w)
        return canvas[:, x:x + w]
    return frame


def scene_cuts(h: int, w: int, frames_per_scene: int, scenes: int = 6, seed: int = 0) -> Callable[[int], np.ndarray]:
    """Still scenes that change every frames_per_scene frames (mostly static, with cuts)."""
    pictures = [block_scene(h, w, seed + k) for k in range(scenes)]
    return lambda i: pictures[(i // frames_per_scene) % scenes]


def slide_with_pointer(h: int = 360, w: int = 640, pointer_px: int = 14) -> Callable[[int], np.ndarray]:
    """A screen recording: a white slide with dark text lines and a coloured chart, still, and a
    small arrow-like pointer moving over it (the only motion)."""
    slide = np.full((h, w, 3), 245, np.uint8)
    rng = np.random.default_rng(7)
    for row in range(h // 8, h // 2, 22):               # "text": short dark strokes
        x = w // 10
        while x < w * 0.9:
            word = int(rng.integers(12, 60))
            slide[row:row + 9, x:x + word] = 30
            x += word + 10
    slide[h * 3 // 5: h * 9 // 10, w // 8: w // 8 + w // 10] = (200, 40, 40)   # bar chart
    slide[h * 7 // 10: h * 9 // 10, w // 4: w // 4 + w // 10] = (40, 90, 200)

    def frame(i: int) -> np.ndarray:
        f = slide.copy()
        x = int(w * 0.2 + (w * 0.6) * ((i * 3) % 100) / 100)
        y = int(h * 0.3 + h * 0.4 * ((i * 7) % 100) / 100)
        for d in range(pointer_px):                      # a triangle pointing up-left
            f[y + d, x:x + max(1, d // 2 + 1)] = 0
        return f
    return frame
