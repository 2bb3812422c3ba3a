"""Keye-VL frame sampling and visual-token accounting, as pure functions (no decoding, no Beam).

Sources: research/keye.md sections 3.1-3.3 (the preview `keye-vl-utils` and the Keye-VL 1.5
slow-fast rules). Every number comes from `media.sampling` in the recipe.

Sizes. `smart_resize` rounds a frame to multiples of `patch_size` (28: 14 px ViT patches
merged 2x2) inside a pixel range, keeping the aspect ratio; a frame of H x W pixels after
it is (H/28)*(W/28) visual tokens, which is what Keye's processor emits per image or frame
(temporal patch size 1). It rejects aspect ratios above `max_aspect_ratio` (200).

Frame counts (`keye_preview` and `slow_fast`): duration * fps (to 6 decimals, so floating
point never loses a frame: the duration itself comes from integer timestamps, media/probe.py),
clamped to [min_frames, max_frames] and to the frames the video has, floored to a multiple of
frame_factor (the preview: at least 4, even; Keye-VL 1.5: no minimum, no rounding, i.e.
`min_frames: 1, frame_factor: 1` in configs/keye15.yaml). The count is also capped so that
even the smallest frame size fits the budget (video_max_tokens // frame_min_tokens frames:
192 in base.yaml, 1365 in keye15.yaml, which is 1.5's own cap). keye_preview bounds the
per-frame size by video_max_tokens / n (the preview code allows 2x that, a leftover of
Qwen2.5-VL's 2-frame temporal merge), so the per-video budget always holds.

Which frames: the n sample times are `linspace(0, span, n)` over the video's own timeline
(span = last minus first presentation time) and each is mapped to the frame with the nearest
presentation timestamp, never to index = t * fps; on a constant-frame-rate video this is
exactly Keye's `linspace(0, total_frames - 1, n).round()` (halves to the even index), on a
variable-rate one it follows the clock. A video with fewer frames than frame_factor repeats
its last frame (Keye pads a frame list the same way). `fixed` mode samples exactly
`fixed_frames` frames the same way (frames repeat when the video has fewer).

Slow-fast (Keye-VL 1.5): frame 0 is slow; every later frame is compared with the last slow
frame by `frame_similarity` (share of 28x28 HSV patches whose cosine similarity exceeds
patch_similarity, on copies scaled to similarity_min_tokens..similarity_max_tokens); at or
above slow_fast.frame_similarity it is fast, else it becomes the new slow frame. The slow
size comes from a binary search on n_slow * t + n_fast * max(int(ratio * t), fast_min_tokens)
against video_max_tokens (`budget_search`: the largest t that fits, or 1.5's first t that
does not); fast frames get max(int(ratio * slow_tokens), fast_min_tokens) tokens of the
actual slow size. README "Keye-VL fidelity" lists each rule against keye-vl-utils.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from schemas.config import SamplingConfig


class AspectRatioError(ValueError):
    """The frame is more elongated than max_aspect_ratio allows."""


# --- sizes --------------------------------------------------------------------------------
def round_by(x: float, factor: int) -> int:
    return round(x / factor) * factor


def ceil_by(x: float, factor: int) -> int:
    return math.ceil(x / factor) * factor


def floor_by(x: float, factor: int) -> int:
    return math.floor(x / factor) * factor


def aspect_ratio(height: int, width: int) -> float:
    return max(height, width) / max(1, min(height, width))


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int,
                 max_ratio: float = 200.0) -> tuple[int, int]:
    """(h, w): multiples of factor, area inside [min_pixels, max_pixels] where rounding allows,
    aspect ratio kept as closely as possible (the rule of Keye's keye-vl-utils)."""
    if height < 1 or width < 1:
        raise ValueError(f"empty frame {height}x{width}")
    if aspect_ratio(height, width) > max_ratio:
        raise AspectRatioError(f"aspect ratio {aspect_ratio(height, width):.1f} > {max_ratio:g}")
    h_bar = max(factor, round_by(height, factor))
    w_bar = max(factor, round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, floor_by(height / beta, factor))
        w_bar = max(factor, floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by(height * beta, factor)
        w_bar = ceil_by(width * beta, factor)
    return h_bar, w_bar


def tokens(size: tuple[int, int], patch: int) -> int:
    """Visual tokens of one frame or image of this (h, w): one per patch x patch area."""
    h, w = size
    assert h % patch == 0 and w % patch == 0, (size, patch)
    return (h // patch) * (w // patch)


def image_size(height: int, width: int, s: SamplingConfig) -> tuple[int, int]:
    """Size the model sees an image at (image_min_tokens..image_max_tokens)."""
    p2 = s.patch_size ** 2
    return smart_resize(height, width, s.patch_size, s.image_min_tokens * p2, s.image_max_tokens * p2,
                        s.max_aspect_ratio)


def frame_size(height: int, width: int, max_tokens: int, s: SamplingConfig) -> tuple[int, int]:
    """A video frame at most max_tokens (and at least frame_min_tokens where rounding allows;
    a fast frame too, as in keye-vl-utils 1.5, whose fast frames share the slow minimum)."""
    p2 = s.patch_size ** 2
    return smart_resize(height, width, s.patch_size, s.frame_min_tokens * p2, max_tokens * p2,
                        s.max_aspect_ratio)


def smallest_frame_tokens(height: int, width: int, s: SamplingConfig) -> int:
    """Tokens of the smallest frame smart_resize makes of this source: frame_min_tokens, or
    more for tiny sources that it has to scale up past the minimum."""
    return max(s.frame_min_tokens, tokens(frame_size(height, width, s.frame_min_tokens, s), s.patch_size))


# --- frame counts and times ----------------------------------------------------------------
def fps_frame_count(duration_s: float, num_frames: int, height: int, width: int, s: SamplingConfig) -> int:
    """Frames to sample in the fps modes (keye_preview, slow_fast)."""
    if num_frames < 1:
        raise ValueError("a video without frames")
    f = s.frame_factor
    budget_frames = s.video_max_tokens // smallest_frame_tokens(height, width, s)
    lo = ceil_by(s.min_frames, f)
    hi = floor_by(min(s.max_frames, num_frames, budget_frames), f)
    # duration * fps to 6 decimals first: 4 s at 2 fps is 8 frames even when the product
    # reads 7.999999999999999 (floating point), where a floor would give 7 (6 to an even count)
    raw = round(duration_s * s.fps, 6)
    n = floor_by(min(max(raw, lo), hi), f)
    return max(n, f)   # fewer frames than frame_factor: the last one repeats


def sample_count(duration_s: float, num_frames: int, height: int, width: int, s: SamplingConfig,
                 fixed_frames: int | None = None) -> int:
    """Frames to sample under s.mode (fixed: exactly fixed_frames, default s.fixed_frames)."""
    if s.mode == "fixed":
        return fixed_frames or s.fixed_frames
    return fps_frame_count(duration_s, num_frames, height, width, s)


def target_times(span_s: float, n: int) -> np.ndarray:
    """n sample times, uniform over [0, span] (seconds from the first frame)."""
    return np.linspace(0.0, max(0.0, span_s), n)


def nearest_frames(frame_times: Sequence[float], targets: Sequence[float]) -> np.ndarray:
    """Index of the frame whose presentation time is nearest each target; a target halfway
    between two frames (within float error) takes the even index, as Keye's
    `linspace(...).round()` does (torch rounds half to even). frame_times must be sorted."""
    t = np.asarray(frame_times, dtype=np.float64)
    q = np.asarray(targets, dtype=np.float64)
    right = np.clip(np.searchsorted(t, q, side="left"), 0, len(t) - 1)
    left = np.clip(right - 1, 0, len(t) - 1)
    d_left, d_right = np.abs(q - t[left]), np.abs(t[right] - q)
    tie = np.abs(d_left - d_right) <= 1e-9 * np.maximum(1.0, np.abs(q))
    pick_left = np.where(tie, left % 2 == 0, d_left < d_right)
    return np.where(pick_left, left, right)


@dataclass(frozen=True)
class VideoPlan:
    """What to sample from one video and at which size (before slow-fast typing)."""

    n: int
    targets: np.ndarray          # seconds from the first frame
    size: tuple[int, int]        # (h, w) frames are decoded to: final (preview, fixed) or ceiling (slow_fast)


def plan_video(duration_s: float, span_s: float, num_frames: int, height: int, width: int,
               s: SamplingConfig, fixed_frames: int | None = None) -> VideoPlan:
    """Frame count, sample times and decode size for a video of this display size."""
    n = sample_count(duration_s, num_frames, height, width, s, fixed_frames)
    if s.mode == "slow_fast":
        # decode at the largest size a slow frame can get (one slow frame, the rest fast at
        # their floor; first_over may go one token past); slow_fast_sizes shrinks afterwards
        over = 1 if s.slow_fast.budget_search == "first_over" else 0
        ceiling = min(s.frame_max_tokens, s.video_max_tokens - (n - 1) * s.slow_fast.fast_min_tokens + over)
        size = frame_size(height, width, max(s.frame_min_tokens, ceiling), s)
    else:
        size = frame_size(height, width, max(1, min(s.frame_max_tokens, s.video_max_tokens // n)), s)
    return VideoPlan(n=n, targets=target_times(span_s, n), size=size)


# --- slow-fast (Keye-VL 1.5) -----------------------------------------------------------------
def similarity_size(height: int, width: int, s: SamplingConfig) -> tuple[int, int]:
    """Size frames are compared at (slow_fast.similarity_min_tokens..similarity_max_tokens)."""
    p2 = s.patch_size ** 2
    sf = s.slow_fast
    return smart_resize(height, width, s.patch_size, sf.similarity_min_tokens * p2, sf.similarity_max_tokens * p2,
                        s.max_aspect_ratio)


def hsv_patches(frame_rgb: np.ndarray, patch: int) -> np.ndarray:
    """(num_patches, patch*patch*3) float32 HSV vectors (OpenCV ranges) of an RGB frame whose
    sides are multiples of patch."""
    import cv2

    hsv = cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2HSV)
    h, w = hsv.shape[:2]
    hp, wp = h // patch, w // patch
    x = hsv[:hp * patch, :wp * patch].reshape(hp, patch, wp, patch, 3).transpose(0, 2, 1, 3, 4)
    return x.reshape(hp * wp, -1).astype(np.float32)


def frame_similarity(a: np.ndarray, b: np.ndarray, patch_threshold: float) -> float:
    """Share of similar patches between two frames given as `hsv_patches` arrays: a patch pair
    is similar when the cosine of its HSV vectors exceeds patch_threshold; pairs where both
    patches are black (zero vectors) are left out. All black: 1.0."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    both_black = (na < 0.01) & (nb < 0.01)
    if both_black.all():
        return 1.0
    cos = (a * b).sum(axis=1) / ((na + 1e-8) * (nb + 1e-8))
    return float((cos[~both_black] > patch_threshold).mean())


def classify_frames(patches: Iterable[np.ndarray], s: SamplingConfig) -> list[int]:
    """Frame types (0 slow, 1 fast): frame 0 is slow; a frame at least frame_similarity
    similar to the last slow frame is fast, otherwise it becomes the last slow frame.
    `patches` may be a generator: only the last slow frame's patches are held (a 1365-frame
    video's patches would be gigabytes as float32)."""
    sf = s.slow_fast
    types: list[int] = []
    last_slow = None
    for p in patches:
        if last_slow is not None and frame_similarity(last_slow, p, sf.patch_similarity) >= sf.frame_similarity:
            types.append(1)
        else:
            types.append(0)
            last_slow = p
    return types


def fast_tokens_for(slow_tokens: int, s: SamplingConfig) -> int:
    """A fast frame's token ceiling: fast_token_ratio of the slow frame's, at least fast_min_tokens."""
    return max(int(s.slow_fast.fast_token_ratio * slow_tokens), s.slow_fast.fast_min_tokens)


def slow_token_budget(n_slow: int, n_fast: int, s: SamplingConfig) -> int:
    """The slow frames' token ceiling t in [frame_min_tokens, frame_max_tokens], by binary search on
    n_slow * t + n_fast * fast_tokens_for(t) against video_max_tokens: `fit` gives the largest t
    that fits (frame_min_tokens when even that does not); `first_over` what keye-vl-utils 1.5's
    search ends on, the smallest t that does not fit (frame_max_tokens when all fit)."""
    def fits(t: int) -> bool:
        return n_slow * t + n_fast * fast_tokens_for(t, s) <= s.video_max_tokens

    lo, hi = s.frame_min_tokens, s.frame_max_tokens
    if not fits(lo):
        return lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    if s.slow_fast.budget_search == "first_over":
        return min(lo + 1, s.frame_max_tokens)
    return lo


def slow_fast_sizes(height: int, width: int, types: Sequence[int],
                    s: SamplingConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """((slow_h, slow_w), (fast_h, fast_w)) for a video of this display size."""
    n_fast = sum(1 for t in types if t == 1)
    t = slow_token_budget(len(types) - n_fast, n_fast, s)
    slow = frame_size(height, width, t, s)
    fast = frame_size(height, width, fast_tokens_for(tokens(slow, s.patch_size), s), s)
    return slow, fast


def video_tokens(types: Sequence[int], slow: tuple[int, int], fast: tuple[int, int] | None, patch: int) -> int:
    """Visual tokens of a video: each frame at its type's size."""
    n_fast = sum(1 for t in types if t == 1)
    total = (len(types) - n_fast) * tokens(slow, patch)
    if n_fast:
        total += n_fast * tokens(fast or slow, patch)
    return total
