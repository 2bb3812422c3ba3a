"""Keye-VL sampling rules and token accounting against hand-computed values (no decoding)."""
import dataclasses
import math

import numpy as np
import pytest

from media.sampling import (AspectRatioError, classify_frames, fps_frame_count, frame_similarity, hsv_patches,
                            image_size, nearest_frames, plan_video, slow_fast_sizes, slow_token_budget,
                            smart_resize, tokens, video_tokens)
from schemas.config import ConfigError, load_config

P = 28 * 28


@pytest.fixture(scope="module")
def s():
    return load_config().media.sampling


def with_(s, **kw):
    return dataclasses.replace(s, **kw)


# --- smart_resize ------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w, lo, hi, want", [
    # 280x280 is already 10x10 patches inside the range: unchanged
    (280, 280, 4 * P, 16384 * P, (280, 280)),
    # 10x10 rounds to 28x28 = 1 token < 4: beta = sqrt(3136/100) = 5.6 -> ceil(56/28)*28 = 56 -> 2x2
    (10, 10, 4 * P, 16384 * P, (56, 56)),
    # 720p at <= 768 tokens: 728x1288 too big; beta = sqrt(921600/602112) = 1.2372;
    # 720/1.2372 = 581.97 -> 560, 1280/1.2372 = 1034.6 -> 1008: 20 x 36 = 720 tokens
    (720, 1280, 128 * P, 768 * P, (560, 1008)),
    # portrait 1080x1920 (h x w = 1920x1080) at <= 768 tokens: beta = sqrt(2073600/602112) = 1.8558;
    # 1920/1.8558 = 1034.6 -> 1008, 1080/1.8558 = 581.97 -> 560
    (1920, 1080, 128 * P, 768 * P, (1008, 560)),
    # 720p at <= 190 tokens: beta = sqrt(921600/148960) = 2.4873; 289.5 -> 280, 514.6 -> 504: 10 x 18 = 180
    (720, 1280, 128 * P, 190 * P, (280, 504)),
    # 96x64 rounds to 84x56 (6 tokens) < 128: beta = sqrt(100352/6144) = 4.0414; 387.97 -> 392, 258.65 -> 280
    (64, 96, 128 * P, 768 * P, (280, 392)),
    # 3000x4000 photo at <= 16384 tokens: rounds to 107 x 143 patches = 2996x4004 = 11,995,984 px <= 12,845,056
    (3000, 4000, 4 * P, 16384 * P, (2996, 4004)),
])
def test_smart_resize_hand_values(h, w, lo, hi, want):
    assert smart_resize(h, w, 28, lo, hi) == want


def test_smart_resize_aspect_ratio_limit():
    # 2000 / 28 = 71.4 -> 71 patches; the short side is raised to one patch
    assert smart_resize(10, 2000, 28, 4 * P, 16384 * P, max_ratio=200) == (28, 1988)
    with pytest.raises(AspectRatioError):
        smart_resize(10, 2010, 28, 4 * P, 16384 * P, max_ratio=200)


def test_image_size_uses_image_token_range(s):
    assert image_size(1, 1, s) == (56, 56)                      # 4 tokens minimum
    # 10000^2 at <= 16384 tokens: beta = sqrt(1e8 / 12845056) = 2.7902; 3584.0 (float: just below) -> 3556
    h, w = image_size(10000, 10000, s)
    assert (h, w) in ((3584, 3584), (3556, 3556)) and tokens((h, w), 28) <= 16384
    # Keye-VL 1.5 (20480): beta = sqrt(1e8 / 16056320) = 2.4956; 4007.1 -> 4004 = 143 patches: 20449 tokens
    assert image_size(10000, 10000, with_(s, image_max_tokens=20480)) == (4004, 4004)


def test_image_size_keye15_hand_value(s):
    # 1000 x 30000 strip: aspect 30 ok; at <= 20480 tokens: round -> 1008 x 30016 = 36 x 1072 = 38592 > 20480
    # beta = sqrt(3e7 / 16056320) = 1.36692; 731.6 -> 728 (26), 21947.2 -> 21924 (783): 26 * 783 = 20358
    assert image_size(1000, 30000, with_(s, image_max_tokens=20480)) == (728, 21924)
    assert tokens((728, 21924), 28) == 20358


# --- frame counts ------------------------------------------------------------------------------
@pytest.mark.parametrize("duration, frames, want", [
    (10.0, 300, 20),      # 10 s at 2 fps
    (11.3, 339, 22),      # 22.6 -> floored to even
    (1.0, 30, 4),         # below min_frames: 4
    (0.3, 3, 2),          # only 3 frames: the largest even count they allow
    (0.04, 1, 2),         # one frame: repeated to frame_factor
    (200.0, 6000, 192),   # 400 wanted, 768 allowed, but the budget holds 24576 // 128 = 192 frames
    (50.0, 1500, 100),
])
def test_fps_frame_count(s, duration, frames, want):
    assert fps_frame_count(duration, frames, 720, 1280, s) == want


def test_frame_count_budget_cap_uses_smallest_real_frame(s):
    # a 64x96 source cannot go below 140 tokens (280x392): 24576 // 140 = 175 -> 174 (even)
    assert fps_frame_count(1000.0, 30000, 64, 96, s) == 174


@pytest.mark.parametrize("duration, h, w, n, size, total", [
    # 10 s 720p: 20 frames, budget/frame = 1228 > 768: 560x1008 = 720 tokens, 14,400 total
    (10.0, 720, 1280, 20, (560, 1008), 14400),
    # 60 s 720p: 120 frames, <= 24576 // 120 = 204 tokens: beta = sqrt(921600/159936) = 2.4005;
    # 299.9 -> 280, 533.2 -> 532: 10 x 19 = 190 tokens, 22,800 total
    (60.0, 720, 1280, 120, (280, 532), 22800),
    # 3 s portrait 1920x1080: 6 frames at 768: 1008x560 -> 720 tokens, 4,320 total
    (3.0, 1920, 1080, 6, (1008, 560), 4320),
    # 2 s 96x64: 4 frames; below the minimum, scaled up: 280x392 = 140 tokens, 560 total
    (2.0, 64, 96, 4, (280, 392), 560),
])
def test_preview_plan_tokens(s, duration, h, w, n, size, total):
    plan = plan_video(duration, duration - 1 / 30, int(duration * 30), h, w, s)
    assert plan.n == n and plan.size == size
    assert video_tokens([0] * n, plan.size, None, 28) == total <= s.video_max_tokens


def test_budget_always_holds_for_any_duration_and_size(s):
    for duration in (0.5, 3, 17.3, 96, 97, 400, 3600):
        for h, w in ((720, 1280), (1080, 1920), (64, 96), (2160, 3840), (200, 7000), (48, 48)):
            n_src = max(1, int(duration * 30))
            plan = plan_video(duration, duration, n_src, h, w, s)
            assert plan.n % 2 == 0 and plan.n >= 2
            assert plan.n * tokens(plan.size, 28) <= s.video_max_tokens, (duration, h, w, plan)


def test_fixed_mode_counts(s):
    fixed = with_(s, mode="fixed")
    for n in (16, 32):
        plan = plan_video(10.0, 9.9, 100, 720, 1280, fixed, fixed_frames=n)
        assert plan.n == n and len(plan.targets) == n
        # 24576 / 16 = 1536 > 768 -> 720 tokens; 24576 / 32 = 768 -> 720 tokens
        assert tokens(plan.size, 28) == 720
    # fewer source frames than asked: frames repeat, the count stays
    assert plan_video(0.2, 0.1, 3, 720, 1280, fixed, fixed_frames=16).n == 16


# --- which frames --------------------------------------------------------------------------------
def test_nearest_frames_follows_time_not_index():
    # 30 frames in the first second, then one per second up to 5 s (variable frame rate)
    times = [i / 30 for i in range(30)] + [1.0, 2.0, 3.0, 4.0, 5.0]
    idx = nearest_frames(times, np.linspace(0, 5.0, 6))
    assert [times[i] for i in idx] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # index-based sampling (Keye on a constant-rate assumption) would stay in the first second
    naive = np.linspace(0, len(times) - 1, 6).round().astype(int)
    assert times[naive[2]] < 1.0


def test_constant_rate_matches_keye_index_linspace():
    from fractions import Fraction

    for total, n in ((300, 20), (301, 22), (97, 4), (1000, 192), (8, 3), (96, 9)):
        times = np.arange(total) / 30.0
        got = nearest_frames(times, np.linspace(0, times[-1], n))
        # Keye: linspace(0, total - 1, n).round(), torch rounding halves to even; here in exact arithmetic
        keye = [round(Fraction(k * (total - 1), n - 1)) for k in range(n)]
        assert got.tolist() == keye, (total, n)


# --- slow-fast ---------------------------------------------------------------------------------
def test_slow_token_binary_search_hand_values(s):
    # 2 slow + 38 fast: 2*768 + 38*230 = 10276 fits: the per-frame maximum
    assert slow_token_budget(2, 38, s) == 768
    # 10 slow + 90 fast: 10t + 90*int(0.3t): t=666 -> 6660 + 90*199 = 24570 <= 24576; t=667 -> 24670
    assert slow_token_budget(10, 90, s) == 666
    # 100 slow + 92 fast: fast frames floor at fast_min_tokens (48, as Keye-VL 1.5), not at 128:
    # t=193 -> 19300 + 92*57 = 24544 fits; t=194 -> 19400 + 92*58 = 24736
    assert slow_token_budget(100, 92, s) == 193
    # keye-vl-utils 1.5's search ends one past the largest fit (first_over)
    over = with_(s, slow_fast=dataclasses.replace(s.slow_fast, budget_search="first_over"))
    assert slow_token_budget(10, 90, over) == 667 and slow_token_budget(2, 38, over) == 768
    # brute force agrees everywhere, both searches
    for n_slow, n_fast in ((1, 0), (1, 191), (7, 13), (40, 40), (191, 1), (150, 40), (200, 300)):
        cost = {t: n_slow * t + n_fast * max(int(0.3 * t), 48) for t in range(128, 769)}.__getitem__
        fits = [t for t in range(128, 769) if cost(t) <= 24576]
        assert slow_token_budget(n_slow, n_fast, s) == (max(fits) if fits else 128)
        over_t = [t for t in range(128, 768) if cost(t) > 24576]
        assert slow_token_budget(n_slow, n_fast, over) == (min(over_t) if over_t else 768)


def test_slow_fast_sizes_and_tokens(s):
    sf = with_(s, mode="slow_fast")
    types = [0] + [1] * 9 + [0] + [1] * 9          # 2 slow, 18 fast
    slow, fast = slow_fast_sizes(720, 1280, types, sf)
    assert slow == (560, 1008) and tokens(slow, 28) == 720          # t = 768 fits
    # fast: int(0.3 * 720) = 216 tokens: beta = sqrt(921600/169344) = 2.3328; 308.6 -> 308, 548.7 -> 532
    assert fast == (308, 532) and tokens(fast, 28) == 11 * 19 == 209
    assert video_tokens(types, slow, fast, 28) == 2 * 720 + 18 * 209


def _binary(seed, h=56, w=84, cell=4):
    """Black/white random cells: independent patterns have HSV patch cosine ~0.5."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, (h // cell + 1, w // cell + 1)) * 255
    g = np.kron(cells, np.ones((cell, cell)))[:h, :w].astype(np.uint8)
    return np.dstack([g, g, g])


def test_frame_similarity_patchwise_hsv():
    a = _binary(0)
    pa = hsv_patches(a, 28)
    assert pa.shape == (6, 28 * 28 * 3)
    assert frame_similarity(pa, pa, 0.7) == 1.0
    black = hsv_patches(np.zeros((56, 84, 3), np.uint8), 28)
    assert frame_similarity(black, black, 0.7) == 1.0                 # all-black pairs are left out
    b = a.copy()
    b[:, :28] = _binary(1)[:, :28]                                     # patch column 0: 2 of 6 patches
    assert frame_similarity(pa, hsv_patches(b, 28), 0.7) == pytest.approx(4 / 6)
    # black patches in both frames do not count: 2 of the remaining 4 differ
    a2, b2 = a.copy(), b.copy()
    a2[:, 56:] = 0
    b2[:, 56:] = 0
    assert frame_similarity(hsv_patches(a2, 28), hsv_patches(b2, 28), 0.7) == pytest.approx(2 / 4)


def test_classify_frames_scene_cut(s):
    sf = with_(s, mode="slow_fast")
    scene1, scene2 = _binary(1), _binary(2)
    frames = [scene1] * 4 + [scene2] * 3
    types = classify_frames([hsv_patches(f, 28) for f in frames], sf)
    assert types == [0, 1, 1, 1, 0, 1, 1]
    # each frame is compared with the last *slow* frame, not its neighbour: a slow drift
    # (one more patch column changed per frame) turns slow once it strays too far
    drift = [scene1.copy() for _ in range(3)]
    drift[1][:, :28] = scene2[:, :28]           # 4/6 similar to frame 0 -> slow at threshold 0.9
    drift[2][:, :28] = scene2[:, :28]           # identical to frame 1 -> fast
    assert classify_frames([hsv_patches(f, 28) for f in drift], sf) == [0, 0, 1]
    lax = with_(sf, slow_fast=dataclasses.replace(sf.slow_fast, frame_similarity=0.6))
    assert classify_frames([hsv_patches(f, 28) for f in drift], lax) == [0, 1, 1]


# --- recipe validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("media.sampling.fps=0", "media.sampling.fps: must be > 0"),
    ("media.sampling.frame_min_tokens=1000", "frame_min_tokens"),
    ("media.sampling.fixed_frames=1000", "fixed_frames"),
    ("media.sampling.slow_fast.frame_similarity=1.5", "frame_similarity"),
    ("media.sampling.mode=slowfast", "must be one of"),
    ("media.decode.backend=ffmpeg", "must be one of"),
    ("media.output.jpeg_quality=0", "jpeg_quality"),
    ("media.quality.min_brightness=0.995", "min_brightness"),
    ("media.decode.timeout_s=0", "timeout_s"),
])
def test_media_recipe_is_validated_on_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_resource_hints_only_when_set():
    assert load_config().media.resources.hints() == {}
    cfg = load_config(None, ["media.resources.accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
                             "media.resources.min_ram=16GB"])
    assert cfg.media.resources.hints() == {"accelerator": "type:nvidia-l4;count:1;install-nvidia-driver",
                                           "min_ram": "16GB"}
    score = load_config(None, ["score.resources.cpu_count=4"]).score.resources
    assert score.hints() == {"cpu_count": "4"} and type(score) is type(cfg.media.resources)   # one shape
    assert math.isclose(cfg.media.sampling.fps, 2.0)


def test_keye15_recipe():
    import os

    from schemas.config import CONFIG_DIR

    cfg = load_config(os.path.join(CONFIG_DIR, "keye15.yaml"))
    assert cfg.media.sampling.mode == "slow_fast" and cfg.media.sampling.image_max_tokens == 20480
    s = cfg.media.sampling         # keye-vl-utils 1.5.2's constants (tests/test_keye15_fidelity.py runs the package)
    assert (s.min_frames, s.frame_factor, s.frame_min_tokens, s.video_max_tokens) == (1, 1, 48, 65536)
    assert (s.slow_fast.fast_min_tokens, s.slow_fast.budget_search) == (48, "first_over")
