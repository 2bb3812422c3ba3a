"""Pictures and clips for the synthetic corpus: coloured shapes on plain or gradient backgrounds.

A `Scene` is the ground truth of one picture (background, and each shape's kind, colour,
centre and size); `draw` renders it, and captions and answers are computed from the same
`Scene` (synthetic/language.py), so they are right by construction. A `Clip` is a scene
plus straight-line motions, rendered frame by frame and encoded to h264 MP4 with PyAV.

Determinism: every function is a pure function of its arguments and of the RNG it is
given. Pillow's PNG and JPEG encoders are deterministic as they are. x264 runs with one
thread and at constant QP: in its rate-controlled modes (crf, bitrate) two encodes of the
same frames in one process sometimes differed in the first IDR slice, constant QP never
did. The MP4 muxer runs with `fflags=+bitexact` (no encoder version tag, no creation time).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Iterator, Optional

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (245, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
# Background colours are never shape colours, so "the red shape" is never the background.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250), "light gray": (200, 200, 200), "cream": (245, 235, 205),
    "pale blue": (200, 225, 245), "dark gray": (70, 70, 70),
}
DIRECTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")
MUX_OPTIONS = {"fflags": "+bitexact"}


@dataclass(frozen=True)
class Shape:
    kind: str          # one of SHAPES
    colour: str        # a COLOURS key
    x: float           # centre, pixels
    y: float
    r: float           # half the shape's extent, pixels


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: str    # a BACKGROUNDS key
    gradient: bool     # darkening from top to bottom instead of a plain fill
    shapes: tuple[Shape, ...]


@dataclass(frozen=True)
class Clip:
    """A scene whose shapes move in straight lines; `directions[i]` moves `scene.shapes[i]`
    from edge to edge over the clip (None: it stays still). `after_cut`, if set, replaces the
    scene and directions from the middle frame on (a hard scene cut); its fps and frame
    count are not used."""

    scene: Scene
    directions: tuple[Optional[str], ...]
    fps: int
    frames: int
    after_cut: Optional["Clip"] = None
    dim: float = 1.0       # multiplies every pixel value (a dark clip)
    blur: float = 0.0      # Gaussian blur radius in pixels (a blurry clip)

    @property
    def duration_s(self) -> float:
        return round(self.frames / self.fps, 3)


# --- scenes ------------------------------------------------------------------------------------
def random_scene(rng: np.random.Generator, width: int, height: int, n_shapes: int,
                 background: Optional[str] = None) -> Scene:
    """Up to n_shapes non-overlapping shapes, each a distinct (kind, colour) pair, so every
    shape can be named unambiguously ("the red circle")."""
    pairs = [(k, c) for k in SHAPES for c in COLOURS]
    order = rng.permutation(len(pairs))
    side = min(width, height)
    shapes: list[Shape] = []
    for idx in order[:n_shapes]:
        kind, colour = pairs[idx]
        for _ in range(60):  # rejection sampling; a crowded small picture may hold fewer shapes
            r = float(rng.uniform(0.09, 0.17)) * side
            x = float(rng.uniform(r + 1, width - r - 1))
            y = float(rng.uniform(r + 1, height - r - 1))
            if all((x - s.x) ** 2 + (y - s.y) ** 2 > (r + s.r + 3) ** 2 for s in shapes):
                shapes.append(Shape(kind, colour, round(x, 1), round(y, 1), round(r, 1)))
                break
    if background is None:
        background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    return Scene(width, height, background, bool(rng.random() < 0.4), tuple(shapes))


def draw(scene: Scene) -> Image.Image:
    top = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    bottom = top * 0.6 if scene.gradient else top
    ramp = np.linspace(0.0, 1.0, scene.height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * ramp, (scene.height, scene.width, 3))
    img = Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(img)
    for s in scene.shapes:
        fill = COLOURS[s.colour]
        box = (s.x - s.r, s.y - s.r, s.x + s.r, s.y + s.r)
        if s.kind == "circle":
            pen.ellipse(box, fill=fill)
        elif s.kind == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(s.x, s.y - s.r), (s.x + s.r, s.y + s.r), (s.x - s.r, s.y + s.r)], fill=fill)
    return img


def encode_image(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG")
    else:
        img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def rescale_jpeg(data: bytes, factor: float, quality: int) -> tuple[bytes, int, int]:
    """Decode, resize by factor and re-encode as JPEG: a near duplicate of the original."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = max(8, round(img.width * factor)), max(8, round(img.height * factor))
    return encode_image(img.resize((w, h), Image.BILINEAR), "jpg", quality), w, h


# --- clips ---------------------------------------------------------------------------------------
def path_of(shape: Shape, direction: Optional[str], width: int, height: int, t: float) -> tuple[float, float]:
    """Centre of a moving shape at time t in [0, 1]: edge to edge along its direction."""
    if direction is None:
        return shape.x, shape.y
    lo_x, hi_x = shape.r + 1, width - shape.r - 1
    lo_y, hi_y = shape.r + 1, height - shape.r - 1
    return {
        "left to right": (lo_x + (hi_x - lo_x) * t, shape.y),
        "right to left": (hi_x - (hi_x - lo_x) * t, shape.y),
        "top to bottom": (shape.x, lo_y + (hi_y - lo_y) * t),
        "bottom to top": (shape.x, hi_y - (hi_y - lo_y) * t),
    }[direction]


def clip_frames(clip: Clip) -> Iterator[np.ndarray]:
    """RGB frames (height, width, 3) of a clip."""
    cut_at = clip.frames // 2 if clip.after_cut is not None else clip.frames
    for i in range(clip.frames):
        part = clip if i < cut_at else clip.after_cut
        t = i / max(1, clip.frames - 1)
        sc = part.scene
        moved = tuple(replace(s, x=x, y=y) for s, d in zip(sc.shapes, part.directions)
                      for x, y in [path_of(s, d, sc.width, sc.height, t)])
        img = draw(replace(sc, shapes=moved))
        if clip.blur:
            img = img.filter(ImageFilter.GaussianBlur(clip.blur))
        frame = np.asarray(img)
        if clip.dim != 1.0:
            frame = np.round(frame * clip.dim).astype(np.uint8)
        yield frame


def encode_mp4(frames, width: int, height: int, fps: int, qp: int = 30) -> bytes:
    """h264 (yuv420p) in MP4, single-threaded at constant QP so the bytes are reproducible."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options=MUX_OPTIONS) as out:
        stream = out.add_stream("libx264", rate=fps, options={"qp": str(qp), "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def encode_clip(clip: Clip) -> bytes:
    return encode_mp4(clip_frames(clip), clip.scene.width, clip.scene.height, clip.fps)


def reencode_mp4(data: bytes, width: int, height: int, qp: int) -> tuple[bytes, int, float]:
    """Decode an MP4, scale every frame to width x height and encode again at another QP
    (a lower bitrate): a near duplicate. Returns (bytes, frames, fps)."""
    with av.open(io.BytesIO(data)) as src:
        stream = src.streams.video[0]
        fps = stream.average_rate
        frames = [f.to_ndarray(width=width, height=height, format="rgb24") for f in src.decode(stream)]
    return encode_mp4(frames, width, height, int(fps), qp), len(frames), float(fps)


def encode_tone_mp4(seconds: float, hz: float, rate: int = 16000) -> bytes:
    """An MP4 whose only stream is AAC audio (a sine tone): a "video" without a video stream."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options=MUX_OPTIONS) as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        stream.thread_count = 1
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()
