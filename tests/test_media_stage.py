"""The media step on whole rows: members and tokens, keep modes, slow-fast on a scene cut,
quality verdicts with stored stats, decoder isolation (crash, hang), determinism, and the
stage inside a real Beam pipeline."""
import functools
import json
import re
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.media import FAULT_ENV, FAULT_PREFIX, MediaFilter
from filters.tokens import TokenAccounting
from media.frames import item_frames
from media.worker import shared_pool
from schemas.config import load_config
from schemas.input import RowContext, normalize_row
from schemas.rejected import Rejected
from schemas.sample import SAMPLE_SCHEMA, Sample
from tests.media_util import (encode_video, image_bytes, index_frame, indexed_video, nearest_source,
                              quadrant_image, quiet, slide_with_pointer, video_of)

quiet()


def make_row(folder, name, data, kind="video", ref=None):
    (folder / name).write_bytes(data)
    ctx = RowContext(source="s", source_ref=ref or name, base_dir=str(folder), max_field_chars=10**6,
                     max_media_per_row=8, max_messages=8)
    return normalize_row({kind: name, "caption": f"a caption of {name}"}, ctx)


def step_for(*overrides, fixed_frames=None):
    step = MediaFilter(load_config(None, list(overrides)), fixed_frames=fixed_frames)
    step.setup()
    return step


@pytest.fixture(scope="module")
def step():
    return step_for()


# --- kept rows -------------------------------------------------------------------------------
def test_video_row_members_tokens_and_scores(tmp_path, step):
    src = [index_frame(i) for i in range(20)]
    s = step(make_row(tmp_path, "clip.mp4", encode_video(src)))
    assert isinstance(s, Sample)
    item = s.media[0]
    assert item.members == [f"{s.id}.0.{j:03d}.jpg" for j in range(4)]
    assert set(s.blobs) == set(item.members) and item.source_member is None   # source bytes dropped
    assert item.frame_timestamps == pytest.approx([0.0, 0.6, 1.3, 1.9]) and item.frame_types == [0] * 4
    assert (item.width, item.height, item.visual_tokens) == (392, 280, 4 * 140)
    assert item.sha256 and item.codec == "h264" and item.duration_s == pytest.approx(2.0)
    frames = item_frames(s, 0)
    assert [nearest_source(f, src) for f in frames] == [0, 6, 13, 19]
    assert all(f.shape == (280, 392, 3) for f in frames)
    # row scores: registered aggregates of the item stats
    assert s.scores["media_min_duration_s"] == pytest.approx(2.0)
    assert s.scores["media_min_side_px"] == 64 and s.scores["media_max_aspect_ratio"] == 1.5
    assert s.scores["media_min_motion"] == item.stats["motion"] > 0
    # the tokens stage sums the items' visual tokens into the row
    tok = TokenAccounting(load_config())
    tok.setup()
    s = tok(s)
    assert s.visual_tokens == 560
    # the row (with its stats struct) fits the Parquet schema
    table = pa.Table.from_pylist([s.to_row()], schema=SAMPLE_SCHEMA)
    back = Sample.from_row(table.to_pylist()[0])
    assert back.media[0].stats == item.stats and back.media[0].members == item.members


def test_image_row_is_resized_and_kept_lossless(tmp_path, step):
    s = step(make_row(tmp_path, "pic.png", image_bytes(quadrant_image(200, 300), "PNG"), kind="image"))
    item = s.media[0]
    # 200x300 rounds to 196x308 = 7 x 11 = 77 tokens
    assert (item.height, item.width, item.visual_tokens) == (196, 308, 77)
    assert item.members == [f"{s.id}.0.000.png"] and item.codec == "png"
    assert item_frames(s, 0)[0].shape == (196, 308, 3)
    assert item.frame_timestamps == [] and "motion" not in item.stats


def test_keep_original_and_both(tmp_path):
    data = indexed_video(20)
    frames_mode = step_for()(make_row(tmp_path, "a.mp4", data))
    orig = step_for("media.output.keep=original")(make_row(tmp_path, "a.mp4", data))
    both = step_for("media.output.keep=both")(make_row(tmp_path, "a.mp4", data))
    source = f"{orig.id}.0.mp4"
    assert orig.media[0].members == [source] == [orig.media[0].source_member]
    assert orig.blobs == {source: data}
    assert both.media[0].members == frames_mode.media[0].members and both.media[0].source_member == source
    assert set(both.blobs) == set(frames_mode.blobs) | {source}
    for s in (orig, both):
        assert s.media[0].visual_tokens == frames_mode.media[0].visual_tokens
        assert s.media[0].frame_timestamps == frames_mode.media[0].frame_timestamps
    # item_frames decodes the kept source at the stored timestamps: same frames (up to JPEG)
    a, b = item_frames(frames_mode, 0), item_frames(orig, 0)
    assert [x.shape for x in a] == [x.shape for x in b]
    assert max(float(np.abs(x.astype(int) - y.astype(int)).mean()) for x, y in zip(a, b)) < 3


def test_fixed_mode_16_and_32_frames(tmp_path):
    data = indexed_video(40)
    for n in (16, 32):
        s = step_for("media.sampling.mode=fixed", fixed_frames=n)(make_row(tmp_path, "f.mp4", data))
        assert len(s.media[0].members) == len(s.media[0].frame_timestamps) == n
        assert s.media[0].visual_tokens == n * 140


def _blocks(seed, h, w, cell=32, saturated=False):
    """Random two-level blocks: gray (HSV saturation 0) or saturated colours, a different scene."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, (h // cell + 1, w // cell + 1))
    mask = np.kron(cells, np.ones((cell, cell), dtype=np.int64))[:h, :w].astype(bool)
    a, b = ([230, 30, 30], [30, 30, 230]) if saturated else ([225, 225, 225], [25, 25, 25])
    return np.where(mask[..., None], np.array(a), np.array(b)).astype(np.uint8)


def test_slow_fast_types_a_scene_cut(tmp_path):
    h, w = 448, 672

    def frame(i):                                    # 4 s at 10 fps: scene A, cut at 2 s, scene B
        img = _blocks(1, h, w) if i < 20 else _blocks(2, h, w, saturated=True)
        x = 40 + 6 * (i % 20)
        img[200:240, x:x + 40] = [240, 200, 40]      # a small moving object: a few patches change
        return img

    s = step_for("media.sampling.mode=slow_fast")(make_row(tmp_path, "cut.mp4", video_of(frame, 40)))
    assert isinstance(s, Sample), s
    item = s.media[0]
    assert len(item.frame_timestamps) == 8                                  # 4 s at 2 fps
    assert item.frame_types == [0, 1, 1, 1, 0, 1, 1, 1]                     # the cut makes frame 4 slow
    # 2 slow + 6 fast: t = 768 fits, slow = 448x672 (16 x 24 = 384 tokens); fast: max(int(0.3*384), 48)
    # = 115 tokens: beta = sqrt(301056/90160) = 1.8273 -> 224x364 = 8 x 13 = 104 tokens
    assert (item.height, item.width) == (448, 672) and (item.fast_height, item.fast_width) == (224, 364)
    assert item.visual_tokens == 2 * 384 + 6 * 104
    shapes = [f.shape[:2] for f in item_frames(s, 0)]
    assert shapes == [(448, 672) if t == 0 else (224, 364) for t in item.frame_types]
    assert item.stats["scene_changes"] == 1.0


def test_same_input_same_bytes(tmp_path, step):
    data = indexed_video(20)
    a = step(make_row(tmp_path, "d.mp4", data))
    shared_pool(1).close()                            # a fresh worker process for the second run
    b = step(make_row(tmp_path, "d.mp4", data))
    inproc = step_for("media.decode.isolation=in_process")(make_row(tmp_path, "d.mp4", data))
    assert a.to_json() == b.to_json() == inproc.to_json()
    assert a.blobs == b.blobs == inproc.blobs


# --- rejected rows ---------------------------------------------------------------------------
def _dark(i):
    return (index_frame(i) // 16).astype(np.uint8)


def _blurred(i):
    import cv2

    return cv2.GaussianBlur(index_frame(i), (0, 0), 4)


@pytest.mark.parametrize("name, make, reason", [
    ("dark.mp4", lambda: video_of(_dark, 20), "too_dark"),
    ("bright.mp4", lambda: video_of(lambda i: np.clip(index_frame(i).astype(int) + 252, 0, 255).astype(np.uint8), 20),
     "too_bright"),
    ("static.mp4", lambda: video_of(lambda i: index_frame(3), 20), "static"),
    ("blurry.mp4", lambda: video_of(_blurred, 20), "blurry"),
    ("short.mp4", lambda: indexed_video(5), "too_short"),
    ("tiny.mp4", lambda: indexed_video(20, h=24, w=32), "too_small"),
    ("one.mp4", lambda: indexed_video(1), "too_short"),
])
def test_quality_verdicts_keep_their_stats(tmp_path, step, name, make, reason):
    out = step(make_row(tmp_path, name, make()))
    assert isinstance(out, Rejected) and (out.stage, out.reason) == ("media", reason), out
    row = json.loads(out.payload)
    stats = row["media"][0]["stats"]
    assert stats["brightness"] is not None and stats["sharpness"] is not None   # measured before judging
    assert row["scores"]["media_min_brightness"] == stats["brightness"]


def test_scene_change_rate_is_opt_in(tmp_path):
    flip = video_of(lambda i: _blocks(i // 3, 64, 96, cell=8, saturated=(i // 3) % 2 == 1), 12)  # cut every 0.3 s
    assert isinstance(step_for()(make_row(tmp_path, "cuts.mp4", flip)), Sample)
    out = step_for("media.quality.max_scene_changes_per_min=60")(make_row(tmp_path, "cuts.mp4", flip))
    assert out.reason == "too_many_scene_changes"


@functools.lru_cache(maxsize=1)
def _slide_clips():
    """2 s at 24 fps of a slide with a moving pointer, and of the same slide frozen."""
    slide = slide_with_pointer(360, 640)
    return video_of(slide, 48, fps=24), video_of(lambda i: slide(0), 48, fps=24)


def test_a_pointer_over_a_still_slide_is_not_static(tmp_path, step):
    """Issue 9: a screen recording (a still slide, a moving pointer) was rejected as static."""
    pointer, still = _slide_clips()
    kept = step(make_row(tmp_path, "slides.mp4", pointer))
    assert isinstance(kept, Sample), kept
    q, st = load_config().media.quality, kept.media[0].stats
    assert st["motion"] < q.min_motion < q.min_motion_peak < st["motion_peak"]     # whole frame still, one tile moves
    out = step(make_row(tmp_path, "frozen.mp4", still))                           # the same slide, nothing moving
    assert out.reason == "static" and "peak tile" in out.detail, out
    assert json.loads(out.payload)["media"][0]["stats"]["motion_peak"] < q.min_motion_peak


def test_quality_rules_pick_thresholds_by_source_and_task(tmp_path):
    pointer, still = _slide_clips()
    rules = ("media.quality.rules=[{source: lectures, task: null, set: {min_motion: 0, min_motion_peak: 0}},"
             " {source: null, task: video, set: {min_motion_peak: 0.5, min_side_px: 32}}]")
    step = step_for(rules)
    row = make_row(tmp_path, "frozen.mp4", still)
    assert row.task == "video" and step(row).reason == "static"            # second rule: stricter for video rows
    row = make_row(tmp_path, "frozen.mp4", still)
    row.source = "lectures"
    assert isinstance(step(row), Sample)                                   # first rule wins: stills wanted there
    row = make_row(tmp_path, "slides.mp4", pointer)
    assert step(row).reason == "static"                                    # 0.1 peak < 0.5 for video rows
    q = load_config(None, [rules]).media.quality
    assert q.for_row("other", "caption") is q and q.for_row("lectures", "video").min_motion_peak == 0.0
    assert isinstance(q.for_row("x", "video").min_side_px, int)


@pytest.mark.parametrize("rule, message", [
    ("{source: null, task: null, set: {min_motoin: 0}}", "set.min_motoin: must be one of"),
    ("{source: null, task: videos, set: {}}", "unknown tasks ['videos']"),
    ("{source: null, task: null, set: {min_brightness: 2}}", "min_brightness"),
    ("{source: null, task: null}", "missing key"),
])
def test_quality_rules_are_validated(rule, message):
    from schemas.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f"media.quality.rules=[{rule}]"])


def test_first_failing_item_names_the_row(tmp_path, step):
    (tmp_path / "ok.mp4").write_bytes(indexed_video(20))
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    ctx = RowContext(source="s", source_ref="two", base_dir=str(tmp_path), max_field_chars=10**6,
                     max_media_per_row=8, max_messages=8)
    out = step(normalize_row({"videos": ["ok.mp4", "bad.mp4"], "caption": "two clips"}, ctx))
    assert out.reason == "not_a_video" and "media[1]" in out.detail
    row = json.loads(out.payload)
    assert row["media"][0]["stats"]["motion"] > 0                            # the good item was measured


# --- isolation ---------------------------------------------------------------------------------
@pytest.fixture
def faults(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "1")


@pytest.mark.parametrize("fault, reason, detail", [
    ("abort", "decoder_crashed", "SIGABRT"),
    ("segv", "decoder_crashed", "SIGSEGV"),
    ("hang", "decode_timeout", "killed"),
    ("raise", "undecodable", "injected failure"),
])
def test_decoder_crash_or_hang_rejects_the_row_only(tmp_path, faults, fault, reason, detail):
    step = step_for("media.decode.timeout_s=3")
    out = step(make_row(tmp_path, f"{fault}.mp4", FAULT_PREFIX + fault.encode()))
    assert isinstance(out, Rejected) and out.reason == reason and detail in out.detail, out
    ok = step(make_row(tmp_path, "after.mp4", indexed_video(20)))       # the pool recovered
    assert isinstance(ok, Sample)


def test_in_process_mode_ignores_fault_hooks(tmp_path, faults):
    out = step_for("media.decode.isolation=in_process")(make_row(tmp_path, "x.mp4", FAULT_PREFIX + b"abort"))
    assert out.reason == "not_a_video"



def test_in_process_mode_maps_unexpected_errors_to_undecodable(tmp_path, monkeypatch):
    import media.process

    def boom(task, res):
        raise ValueError("bad pixels")

    monkeypatch.setattr(media.process, "_video", boom)
    out = step_for("media.decode.isolation=in_process")(make_row(tmp_path, "x.mp4", indexed_video(20)))
    assert out.reason == "undecodable" and "ValueError: bad pixels" in out.detail


# --- through Beam ----------------------------------------------------------------------------------
def test_media_stage_in_the_curate_pipeline(tmp_path):
    from pipelines.curate import build_curate
    from pipelines.launch import run

    src = tmp_path / "in"
    src.mkdir()
    (src / "v1.mp4").write_bytes(indexed_video(20))
    (src / "v2.webm").write_bytes(indexed_video(30, "vp9_webm"))
    (src / "p.jpg").write_bytes(image_bytes(quadrant_image(120, 160), "JPEG"))
    (src / "dark.mp4").write_bytes(video_of(_dark, 20))
    rows = [{"video": "v1.mp4", "caption": "first clip"}, {"video": "v2.webm", "caption": "second clip"},
            {"image": "p.jpg", "caption": "a picture"}, {"video": "dark.mp4", "caption": "too dark"}]
    (src / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    manifest = run("curate", build_curate, ["--input", str(src / "rows.jsonl"), "--output", str(out),
                                            "--progress_s", "0"])
    assert manifest.totals.kept == 3 and manifest.totals.rejected_by_reason == {"media/too_dark": 1}
    table = pq.read_table(str(out / "parquet"))
    by_ref = {r["source_ref"]: r for r in table.to_pylist()}
    v1 = by_ref["rows.jsonl:1"]
    assert v1["visual_tokens"] == sum(m["visual_tokens"] for m in v1["media"]) == 4 * 140
    assert by_ref["rows.jsonl:2"]["media"][0]["codec"] == "vp9"
    assert len(by_ref["rows.jsonl:2"]["media"][0]["frame_timestamps"]) == 6        # 3 s at 2 fps
    members = {}
    for tar_path in (out / "wds").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                members[m.name] = tar.extractfile(m).read()
    for r in by_ref.values():
        for m in r["media"]:
            assert m["members"] and all(name in members for name in m["members"])
            assert all(members[name][:2] == b"\xff\xd8" for name in m["members"])   # JPEG
        sample = Sample.from_row(r)
        sample.blobs = {n: members[n] for m in r["media"] for n in m["members"]}
        assert len(item_frames(sample, 0)) == len(r["media"][0]["members"])
    assert manifest.totals.visual_tokens == sum(r["visual_tokens"] for r in by_ref.values())
    assert not any(n.endswith((".mp4", ".webm")) for n in members)          # keep: frames


def test_media_stage_counts_frames_and_backends(tmp_path):
    """The step is Beam-free; the stage (pipelines/media.py) turns each item's result into metrics."""
    from pipelines.media import Media
    from tests.beam_util import run_collect, stage_outputs

    rows = [make_row(tmp_path, "a.mp4", indexed_video(20)), make_row(tmp_path, "b.mp4", indexed_video(30))]
    out = run_collect(rows, stage_outputs(Media(load_config(None, ["media.decode.isolation=in_process"]))))
    assert len(out["kept"]) == 2
    c = out["counters"]
    assert c["media/videos"] == 2 and c["media/frames_sampled"] == 4 + 6 and c["media/backend/pyav"] == 2
    assert c["media/kept"] == 2


def test_pool_is_thread_safe_and_replaces_dead_workers():
    from concurrent.futures import ThreadPoolExecutor

    from media.process import ItemTask
    from media.worker import DecodePool

    mc = load_config().media
    pool = DecodePool(2)
    good = indexed_video(20)
    tasks = [ItemTask("video", good, mc), ItemTask("video", b"x", mc, fault="abort"),
             ItemTask("video", good, mc), ItemTask("image", image_bytes(quadrant_image()), mc)]
    try:
        with ThreadPoolExecutor(4) as ex:
            results = list(ex.map(lambda t: pool.run(t, 60), tasks))
        assert [r.reason for r in results] == [None, "decoder_crashed", None, None]
        assert results[0].encoded == results[2].encoded
        victim = pool._idle[0]                       # a worker killed from outside while idle
        victim.proc.kill()
        victim.proc.wait()
        assert pool.run(ItemTask("video", good, mc), 60).reason is None
    finally:
        pool.close()


def test_sharpness_ignores_flat_regions_but_not_blur():
    """A small crisp shape in a big flat margin (slides, charts, logos) is sharp; blurring it is not."""
    import cv2

    from media.stats import sharpness

    img = np.full((300, 96), 200, np.uint8)
    img[220:240, 66:87] = 160                       # a small square in the right-hand margin
    whole_frame = float(cv2.Laplacian(img, cv2.CV_32F).var())
    sharp = sharpness(img, 32, 0.05)
    blurred = sharpness(cv2.GaussianBlur(img, (0, 0), 4), 32, 0.05)
    cfg = load_config().media.quality
    assert whole_frame < cfg.min_sharpness < sharp   # the old whole-frame measure called this blurry
    assert blurred < cfg.min_sharpness
    assert sharpness(np.full((64, 64), 128, np.uint8), 32, 0.05) == 0.0
