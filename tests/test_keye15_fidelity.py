"""configs/keye15.yaml against Kwai's own keye-vl-utils 1.5 (the package, run here).

The same generated clips go through `keye_vl_utils.fetch_video` (decord, torch) and through
the media stage's item processing under keye15.yaml; frame counts, frame types, slow and
fast sizes, visual tokens and timestamps must agree exactly (timestamps to Keye's float32).
Images: `smart_resize` on a grid of sizes, elongated ones included.
"""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from media.process import ItemTask, process_item
from media.sampling import AspectRatioError, image_size
from schemas.config import load_config
from tests.media_util import encode_video, quiet, scene_cuts, scrolling, slide_with_pointer

vp = pytest.importorskip("keye_vl_utils.vision_process")
quiet()

PATCH = 28


@pytest.fixture(scope="module")
def keye15():
    return load_config("configs/keye15.yaml", ["media.decode.isolation=in_process",
                                               "media.decode.backend=pyav"]).media


def keye_video(path: str) -> dict:
    """What keye-vl-utils 1.5 gives a trainer for this file (defaults: 2 fps, 65,536 tokens)."""
    _, kw = vp.fetch_video({"type": "video", "video": path})
    types = [int(t) for t in kw["frame_types"]]
    slow, fast = (kw["height"], kw["width"]), (kw["fast_height"], kw["fast_width"])
    n_fast = sum(types)
    return {"frames": len(types), "types": types, "slow": slow, "fast": fast,
            "tokens": (len(types) - n_fast) * slow[0] * slow[1] // PATCH ** 2 + n_fast * fast[0] * fast[1] // PATCH ** 2,
            "timestamps": [round(float(t), 3) for t in kw["timestamps"]]}


def engine_video(data: bytes, media_cfg) -> dict:
    r = process_item(ItemTask("video", data, media_cfg, encode=False))
    assert r.reason is None, (r.reason, r.detail)
    return {"frames": len(r.frame_types), "types": r.frame_types, "slow": (r.height, r.width),
            "fast": (r.fast_height, r.fast_width), "tokens": r.visual_tokens,
            "timestamps": [round(float(np.float32(t)), 3) for t in r.frame_timestamps]}


# (name, content, source fps, seconds, height, width, display rotation)
CLIPS = [
    ("static-slide-pointer-24fps", "pointer", 24, 4, 360, 640, None),
    ("scrolling-24fps", "scroll", 24, 5, 240, 426, None),
    ("cuts-30fps", "cuts", 30, 7, 360, 640, None),
    ("cuts-ntsc", "cuts", Fraction(30000, 1001), 5, 240, 320, None),
    ("scrolling-12fps-tiny", "scroll", 12, 3, 64, 64, None),
    ("cuts-1fps-under-keye-fps", "cuts", 1, 9, 240, 426, None),
    ("cuts-rotated-90", "cuts", 24, 3, 240, 426, 90),
    ("portrait-cuts-25fps", "cuts", 25, 6, 426, 240, None),
    ("hd-scrolling-short", "scroll", 24, 2, 720, 1280, None),
    ("cuts-50fps-coding-noise", "cuts", 50, 8, 240, 426, None),    # similarities near 0.9 after cuts
]


def content(kind: str, h: int, w: int, fps) -> callable:
    if kind == "scroll":
        return scrolling(h, w)
    if kind == "cuts":
        return scene_cuts(h, w, frames_per_scene=max(1, round(float(fps) * 1.5)))
    return slide_with_pointer(h, w)


@pytest.mark.parametrize("name, kind, fps, seconds, h, w, rotation", CLIPS, ids=[c[0] for c in CLIPS])
def test_keye15_reproduces_keye_vl_utils_on_clips(tmp_path, keye15, name, kind, fps, seconds, h, w, rotation):
    n = round(fps * seconds)
    make = content(kind, h, w, fps)
    data = encode_video([make(i) for i in range(n)], fps=fps, rotation=rotation, options={"crf": "20"})
    path = tmp_path / f"{name}.mp4"
    path.write_bytes(data)
    keye = keye_video(str(path))
    ours = engine_video(data, keye15)
    assert ours == keye
    if kind == "cuts":                      # the clips exercise both frame types
        assert 0 < sum(keye["types"]) < keye["frames"]


def test_a_200s_240p_screen_recording_counts_as_keye_does(tmp_path, keye15):
    """Issue 9's example: keye15.yaml used to sample 192 frames of a 200 s 240p clip (24,576 tokens
    over a 128-token floor: 23,040 tokens); keye-vl-utils 1.5 samples all 400, fast ones at 45 tokens."""
    make = slide_with_pointer(240, 426)
    data = encode_video([make(i) for i in range(400)], fps=2, options={"crf": "16"})
    path = tmp_path / "c.mp4"
    path.write_bytes(data)
    keye = keye_video(str(path))
    assert engine_video(data, keye15) == keye
    assert keye["frames"] == 400 and keye["fast"] == (140, 252)


SIDES = sorted({1, 2, 3, 13, 27, 28, 29, 41, 56, 99, 112, 223, 240, 337, 480, 511, 720, 1000, 1080, 1279,
                1920, 2160, 3001, 4096, 5600, 8191, 14000})


def test_image_smart_resize_matches_on_a_grid(keye15):
    s = keye15.sampling
    assert (s.image_min_tokens, s.image_max_tokens, s.patch_size) == (vp.MIN_TOKENS, vp.MAX_TOKENS, vp.IMAGE_FACTOR)
    checked = rejected = 0
    for h, w in itertools.product(SIDES, SIDES):
        try:
            want = vp.smart_resize(h, w, vp.IMAGE_FACTOR, vp.MIN_PIXELS, vp.MAX_PIXELS)
        except ValueError:
            with pytest.raises(AspectRatioError):
                image_size(h, w, s)
            rejected += 1
            continue
        assert image_size(h, w, s) == want, (h, w)
        checked += 1
    assert checked > 500 and rejected > 10


@pytest.mark.parametrize("fps", [12.5, 20, 24, 25, 29.97, 30, 50, 60, 120])
def test_frame_timestamp_text_is_what_kwais_processor_writes(fps):
    """keye-vl-utils returns timestamps as a float32 tensor of (1/fps)*i; the processor writes each
    with ".1f". Ours are stored as float64 seconds (6 decimals) and must render the same text."""
    import torch

    from keye.chat import frame_timestamp_text

    n = 3000
    kwai = torch.FloatTensor([(1 / fps) * i for i in range(n)])
    ours = [frame_timestamp_text(round(i / fps, 6)) for i in range(n)]
    assert ours == [format(t, ".1f") for t in kwai]
    if fps in (20, 60, 120):   # frames on x.x5 s: float64 text would differ there
        assert sum(f"{round(i / fps, 6):.1f}" != o for i, o in enumerate(ours)) > 0
