"""Decoding real files made in the test: every codec and container, rotation, variable frame
rate, short and one-frame videos, images, and each way an input can be unusable."""
import dataclasses
import io
from fractions import Fraction

import numpy as np
import pytest

from media.backend import make_sampler, sample_video
from media.container import container_truncated
from media.decord_sampler import DecordSampler
from media.gpu import decord_gpu_available
from media.images import decode_image
from media.probe import probe_video
from media.pyav_sampler import PyAVSampler, frames_at
from media.process import ItemTask, process_item
from schemas.config import load_config
from tests.media_util import (CODECS, audio_only, encode_video, frame_index, image_bytes, index_frame,
                              indexed_video, nearest_source, quadrant_image, quiet, red_quadrant,
                              zero_payload)

quiet()


@pytest.fixture(scope="module")
def mc():
    return load_config().media


def run(mc, kind, data, **over):
    cfg = mc
    for section, kw in over.items():
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **kw)})
    return process_item(ItemTask(kind, data, cfg))


def decoded(res):
    from media.frames import decode_image as dec

    return [dec(b) for b in res.encoded]


# --- codecs and containers -------------------------------------------------------------------------
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_and_container(mc, codec):
    data = indexed_video(20, codec)                  # 2 s at 10 fps, 96x64
    res = run(mc, "video", data)
    assert res.reason is None, res.detail
    assert res.codec == CODECS[codec][0].replace("lib", "").replace("x264", "h264").replace(
        "x265", "hevc").replace("vpx-vp9", "vp9").replace("svtav1", "av1")
    assert (res.source_width, res.source_height) == (96, 64)
    assert res.duration_s == pytest.approx(2.0) and res.fps == pytest.approx(10.0)
    # 2 s at 2 fps = 4 frames; linspace(0, 1.9, 4) -> nearest frames 0, 6, 13, 19 (Keye: linspace(0, 19, 4).round())
    assert res.frame_timestamps == pytest.approx([0.0, 0.6, 1.3, 1.9])
    assert [frame_index(f) for f in decoded(res)] == [0, 6, 13, 19]
    # 96x64 is below 128 tokens: scaled up to 392x280 = 14 x 10 = 140 tokens per frame
    assert (res.width, res.height) == (392, 280) and res.visual_tokens == 4 * 140
    assert all(f.shape == (280, 392, 3) for f in decoded(res))


def test_exact_sampling_equals_full_decode_with_bframes_and_short_gops(mc):
    """The skip-non-reference and seek shortcuts change nothing: same pixels as decoding all."""
    import av

    for codec, gop in (("h264_mp4", 5), ("hevc_mp4", 6), ("h264_mkv", None), ("vp9_webm", 4), ("av1_mkv", 8),
                       ("mpeg4_avi", 6), ("mjpeg_avi", None)):
        data = indexed_video(60, codec, gop=gop)
        info = probe_video(data, 1 << 40)
        targets = np.linspace(0, info.span_s, 5)       # sparse: the seek path runs on short GOPs
        fast = PyAVSampler(threads=2).sample(data, info, targets, (64, 96))
        slow = PyAVSampler(threads=1, seek=False).sample(data, info, targets, (64, 96))
        with av.open(io.BytesIO(data)) as c:           # reference: every frame, no tricks
            every = {f.pts: f.to_ndarray(width=96, height=64, format="rgb24", interpolation="BICUBIC",
                                         dst_color_range="JPEG") for f in c.decode(video=0)}
        ref = [every[int(info.pts[i])] for i in np.abs(info.times[None, :] - targets[:, None]).argmin(1)]
        for a, b, r in zip(fast.frames, slow.frames, ref):
            assert np.array_equal(a, b) and np.array_equal(a, r), codec


def test_nonref_skipping_only_where_it_is_exact():
    assert probe_video(indexed_video(10, "h264_mp4"), 1 << 40).nonref_skip_safe
    assert probe_video(indexed_video(10, "hevc_mp4"), 1 << 40).nonref_skip_safe      # one temporal layer
    layered = indexed_video(30, "hevc_mp4", options={"x265-params": "log-level=error:temporal-layers=3"})
    info = probe_video(layered, 1 << 40)
    assert not info.nonref_skip_safe          # sub-layer non-reference pictures may be referenced
    targets = np.linspace(0, info.span_s, 4)
    a = PyAVSampler(2).sample(layered, info, targets, (64, 96)).frames
    b = PyAVSampler(1, seek=False).sample(layered, dataclasses.replace(info, nonref_skip_safe=False),
                                          targets, (64, 96)).frames
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# --- orientation, timing ------------------------------------------------------------------------
# --- exact durations (issue 9: 96 frames at 24 fps read 3.9999999999999996 s, sampled 6 frames) ---
@pytest.mark.parametrize("rate", [24, 12, Fraction(30000, 1001)])
def test_whole_second_durations_are_exact_and_give_keyes_frame_count(rate):
    from media.sampling import fps_frame_count

    preview = load_config().media.sampling
    one_by_one = load_config(None, ["media.sampling.frame_factor=1", "media.sampling.min_frames=1"]).media.sampling
    for seconds in range(1, 9):
        n = round(rate * seconds)                 # NTSC: 30 frames per 1.001 s
        info = probe_video(encode_video([index_frame(0, 16, 16)] * n, fps=rate, options={"crf": "40"}), 1 << 40)
        exact = Fraction(n) / Fraction(rate)
        assert info.num_frames == n and info.duration_s == float(exact), (rate, seconds, info.duration_s)
        assert info.times[-1] == float(Fraction(n - 1) / Fraction(rate))
        keye = int(n / float(rate) * 2.0)          # keye-vl-utils 1.5: int(total_frames / video_fps * fps)
        assert fps_frame_count(info.duration_s, n, 16, 16, one_by_one) == keye
        assert fps_frame_count(info.duration_s, n, 16, 16, preview) == max(4, keye - keye % 2)


def test_frame_count_survives_representation_error():
    from media.sampling import fps_frame_count

    s = load_config(None, ["media.sampling.frame_factor=1", "media.sampling.min_frames=1"]).media.sampling
    assert fps_frame_count(3.9999999999999996, 96, 64, 64, s) == 8
    assert fps_frame_count(3.99, 96, 64, 64, s) == 7               # a real 3.99 s still truncates
    assert fps_frame_count(3.9999999999999996, 96, 64, 64, load_config().media.sampling) == 8


@pytest.mark.parametrize("rotation, quadrant, portrait", [(90, "bl", True), (-90, "tr", True), (180, "br", False)])
def test_display_rotation_is_applied(mc, rotation, quadrant, portrait):
    # source: 96x64 landscape, red top-left; a phone's portrait video is stored like this + a display matrix
    data = encode_video([quadrant_image()] * 10, "h264_mp4", rotation=rotation)
    res = run(mc, "video", data)
    assert res.reason is None
    assert (res.source_height > res.source_width) == portrait
    assert (res.height > res.width) == portrait
    for f in decoded(res):
        assert red_quadrant(f) == quadrant
        assert f.shape[:2] == (res.height, res.width)


def test_frames_at_source_size_is_display_oriented():
    # no size given: the source's display size, rotated, not squeezed into the stored shape
    data = encode_video([quadrant_image()] * 10, "h264_mp4", rotation=90)
    f = frames_at(data, [0.0])[0]
    assert f.shape == (96, 64, 3) and red_quadrant(f) == "bl"
    assert np.array_equal(f, frames_at(data, [0.0], (96, 64))[0])


def test_variable_frame_rate_is_sampled_by_time(mc):
    # 30 frames in the first second, then one frame per second to 5 s
    pts = [round(i * 1000 / 30) for i in range(30)] + [1000, 2000, 3000, 4000, 5000]
    src = [index_frame(i, step=4, base=60) for i in range(len(pts))]
    data = encode_video(src, "h264_mkv", pts_ms=pts)
    res = run(mc, "video", data)
    assert res.reason is None
    info = probe_video(data, 1 << 40)
    assert info.num_frames == 35 and info.span_s == pytest.approx(5.0)
    # 5 s + one frame (median spacing 1/30 s) -> 10 frames at 2 fps, targets every 5/9 s
    assert len(res.frame_timestamps) == 10
    targets = np.linspace(0, 5.0, 10)
    times = np.array(pts) / 1000
    want = [times[np.abs(times - t).argmin()] for t in targets]
    assert res.frame_timestamps == pytest.approx(want, abs=1e-3)
    assert res.frame_timestamps[-1] == pytest.approx(5.0)      # index/fps would stop near 1.2 s
    got = [nearest_source(f, src) for f in decoded(res)]
    assert got == [int(np.abs(times - t).argmin()) for t in targets]
    assert res.stats["timestamp_error_s"] == pytest.approx(max(abs(a - b) for a, b in zip(want, targets)), abs=1e-3)


def test_short_and_single_frame_videos(mc):
    three = run(mc, "video", indexed_video(3, "h264_mp4"))
    assert three.reason is None and len(three.frame_timestamps) == 2     # 3 frames: the even count they allow
    assert [frame_index(f) for f in decoded(three)] == [0, 2]
    one = run(mc, "video", indexed_video(1, "h264_mp4"))
    assert one.reason is None
    assert one.frame_timestamps == [0.0, 0.0] and len(one.encoded) == 2   # repeated to frame_factor
    assert one.duration_s == pytest.approx(0.1) and one.stats["motion"] == 0.0
    assert one.visual_tokens == 2 * 140


def test_fixed_frame_counts_on_a_short_video(mc):
    data = indexed_video(20, "h264_mp4")
    for n in (16, 32):
        res = process_item(ItemTask("video", data, dataclasses.replace(
            mc, sampling=dataclasses.replace(mc.sampling, mode="fixed")), fixed_frames=n))
        assert len(res.frame_timestamps) == n == len(res.encoded)
        assert res.frame_timestamps[0] == 0.0 and res.frame_timestamps[-1] == pytest.approx(1.9)
        idx = [frame_index(f) for f in decoded(res)]
        assert idx == sorted(idx) and len(set(idx)) == min(n, 20)


# --- rejected inputs ------------------------------------------------------------------------
def test_truncated_containers_are_named(mc):
    for codec in ("h264_mp4", "h264_mkv", "mpeg4_avi"):
        data = indexed_video(20, codec)
        cut = data[: len(data) * 2 // 3]
        assert container_truncated(data) is None
        assert container_truncated(cut), codec
        res = run(mc, "video", cut)
        assert res.reason == "truncated_media", (codec, res.detail)


@pytest.mark.parametrize("data, reason", [
    (b"this is a caption file, not a video\n" * 20, "not_a_video"),
    (b"\x00" * 4096, "not_a_video"),
])
def test_not_a_video(mc, data, reason):
    assert run(mc, "video", data).reason == reason


def test_still_image_given_as_video(mc):
    res = run(mc, "video", image_bytes(quadrant_image(), "JPEG"))
    assert res.reason == "not_a_video" and "still image" in res.detail


def test_audio_only_has_no_video_stream(mc):
    res = run(mc, "video", audio_only(0.5))
    assert res.reason == "no_video_stream" and "audio" in res.detail


def test_corrupt_streams(mc):
    # container intact, every frame's bytes zeroed: FFmpeg finds the stream, no frame decodes
    for codec in ("h264_mp4", "hevc_mp4"):
        res = run(mc, "video", zero_payload(indexed_video(10, codec)))
        assert res.reason == "undecodable", (codec, res.detail)
    # the later three quarters of a WebM overwritten with noise: the demuxer reads a fraction
    # of what the container declares
    data = bytearray(indexed_video(40, "vp9_webm"))
    start = len(data) // 4
    data[start:] = np.random.default_rng(0).integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    res = run(mc, "video", bytes(data))
    assert res.reason in ("truncated_media", "undecodable"), res.detail


def test_pixel_and_duration_caps(mc):
    data = indexed_video(20, "h264_mp4")
    assert run(mc, "video", data, decode=dict(max_video_pixels=96 * 64 - 1)).reason == "too_many_pixels"
    assert run(mc, "video", data, decode=dict(max_duration_s=1.5)).reason == "video_too_long"
    img = image_bytes(quadrant_image(), "PNG")
    assert run(mc, "image", img, decode=dict(max_image_pixels=96 * 64 - 1)).reason == "too_many_pixels"


def test_extreme_aspect_ratio_is_rejected_with_stats(mc):
    strip = np.full((2, 500, 3), 200, np.uint8)
    res = run(mc, "image", image_bytes(strip, "PNG"))
    assert res.reason == "aspect_ratio" and res.stats["aspect_ratio"] == 250.0


# --- images ------------------------------------------------------------------------------------
def test_image_formats_exif_and_rgb(mc):
    base = quadrant_image(64, 96)
    # EXIF orientation 6: stored landscape, shown rotated 90 degrees clockwise
    for fmt in ("JPEG", "WEBP"):
        res = run(mc, "image", image_bytes(base, fmt, exif_orientation=6, quality=95))
        assert res.reason is None and (res.source_width, res.source_height) == (64, 96)
        assert red_quadrant(decoded(res)[0]) == "tr"
        assert res.ext == "jpg" and res.codec == fmt.lower()
    png = run(mc, "image", image_bytes(base, "PNG"))
    assert png.ext == "png" and png.codec == "png"          # lossless source: lossless member
    # 96x64 -> rounds to 84x56 = 6 tokens (inside 4..16384)
    assert (png.width, png.height) == (84, 56) and png.visual_tokens == 6


def test_image_alpha_palette_16bit_cmyk_and_gif(mc):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 0                                       # fully transparent: white after compositing
    res = run(mc, "image", image_bytes(rgba, "PNG"))
    assert decoded(res)[0].mean() == pytest.approx(255, abs=1)
    g16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(g16).save(buf, format="PNG")
    img = decode_image(buf.getvalue(), 1 << 40)
    assert img.rgb.dtype == np.uint8 and img.rgb.max() == 255 and img.rgb.min() == 0
    cmyk = run(mc, "image", image_bytes(quadrant_image(), "JPEG", mode="CMYK"))
    assert cmyk.reason is None and red_quadrant(decoded(cmyk)[0]) == "tl"
    # animated GIF: the first frame
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (30, 220)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    gif = decode_image(buf.getvalue(), 1 << 40)
    assert gif.format == "GIF" and gif.rgb.mean() == pytest.approx(30, abs=2)


def test_broken_images(mc):
    jpeg = image_bytes(np.clip(128 + np.random.default_rng(0).normal(0, 50, (256, 256, 3)), 0, 255)
                       .astype(np.uint8), "JPEG", quality=95)
    assert run(mc, "image", jpeg[: len(jpeg) // 2]).reason == "truncated_media"
    png = bytearray(image_bytes(quadrant_image(), "PNG"))
    idat = png.find(b"IDAT")
    png[idat + 20: idat + 40] = bytes(20)                     # corrupt compressed data
    assert run(mc, "image", bytes(png)).reason == "undecodable"
    assert run(mc, "image", b"plain text").reason == "not_an_image"


# --- backends --------------------------------------------------------------------------------
def test_auto_backend_is_gpu_decord_or_pyav():
    """Here (PyPI decord, no GPU) auto is PyAV; with a CUDA build of decord and a GPU, decord.gpu."""
    auto, forced = make_sampler("auto", 2), make_sampler("decord", 2)
    assert isinstance(forced, DecordSampler)
    if decord_gpu_available():
        assert isinstance(auto, DecordSampler) and auto.gpu and forced.gpu
    else:
        assert isinstance(auto, PyAVSampler) and not forced.gpu


def test_decord_backend_agrees_with_pyav(mc):
    data = indexed_video(20, "h264_mp4")
    a = run(mc, "video", data, decode=dict(backend="decord"))
    b = run(mc, "video", data, decode=dict(backend="pyav"))
    assert a.backend == "decord" and b.backend == "pyav"
    assert a.frame_timestamps == pytest.approx(b.frame_timestamps, abs=1e-3)
    assert [frame_index(f) for f in decoded(a)] == [frame_index(f) for f in decoded(b)]
    rot = run(mc, "video", encode_video([quadrant_image()] * 10, "h264_mp4", rotation=90), decode=dict(backend="decord"))
    assert red_quadrant(decoded(rot)[0]) == "bl" and rot.height > rot.width


def test_decord_failure_falls_back_to_pyav(mc):
    data = indexed_video(20, "av1_mkv")          # decord's bundled FFmpeg has no AV1 decoder
    info = probe_video(data, 1 << 40)
    out = sample_video(data, info, [0.0, 1.9], (64, 96), DecordSampler(2), "exact")
    assert out.backend == "pyav" and out.notes and "decord failed" in out.notes[0]


def test_approximate_frame_access_reports_its_error(mc):
    data = indexed_video(60, "h264_mp4", gop=30)      # 6 s, keyframes at 0 and 3 s
    exact = run(mc, "video", data)
    key = run(mc, "video", data, decode=dict(frame_access="keyframe"))
    ref = run(mc, "video", data, decode=dict(frame_access="reference"))
    assert exact.stats["timestamp_error_s"] <= 0.05 + 1e-9            # half a frame at 10 fps
    assert key.stats["timestamp_error_s"] >= 1.0                      # snapped to 0 s / 3 s
    assert set(key.frame_timestamps) <= {0.0, 3.0}
    assert ref.stats["timestamp_error_s"] < key.stats["timestamp_error_s"]
    assert len(key.frame_timestamps) == len(exact.frame_timestamps)
