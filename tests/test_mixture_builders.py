"""Pipeline-side pieces around the mode builders: every video row at 16 and 32 frames, re-fetched
from its uri (a file or a tar member) after curation dropped the bytes, and routing rows to builders."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from filters.media import MediaFilter
from mixture.builders import make_builders
from mixture.variants import VideoVariants, refetch
from pipelines.mixture import route
from schemas.rejected import Rejected
from schemas.sample import Sample
from tests import media_util as mu
from tests.conftest import make_cfg, row_context

CFG = ("media.decode.isolation=in_process", "media.quality.min_motion=0", "media.quality.min_sharpness=0")


def _moving(i, h=48, w=64):
    return np.clip(120 + np.roll(mu.texture(h, w), 3 * i, axis=1), 0, 255).astype(np.uint8).repeat(3).reshape(h, w, 3)


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    data = mu.video_of(_moving, 40, fps=10)
    (d / "clip.mp4").write_bytes(data)
    with tarfile.open(d / "shard.tar", "w") as tar:
        info = tarfile.TarInfo("k1.mp4")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return d


def _curated(payload, base_dir, cfg, ref: str = "r:1") -> Sample:
    """A row as curation leaves it: validated, media decoded and kept as sampled frames only."""
    from schemas.input import normalize_row

    sample = normalize_row(payload, row_context(str(base_dir), source_ref=ref))
    out = MediaFilter(cfg)(sample)
    assert isinstance(out, Sample), out
    return out


def _built(curated: Sample, tag: str, mode: str) -> Sample:
    """What a video builder hands on (mixture/video.py): the curated row under `<id>@<tag>`, members renamed."""
    (b,) = [b for b in make_builders(make_cfg(*CFG)) if b.category == ("video_think" if mode == "think" else
                                                                      "video_no_think")]
    assert b.tag == tag
    (row,) = b(curated)
    return row


@pytest.mark.parametrize("where", ["file", "tar"])
def test_video_variants_at_16_and_32_frames(video_file, where):
    cfg = make_cfg(*CFG)
    payload = {"video": "clip.mp4", "question": "Which way does it move?", "answer": "Left."}
    curated = _curated(payload, video_file, cfg)
    assert curated.media[0].source_member is None and len(curated.media[0].frame_timestamps) not in (16, 32)
    if where == "tar":
        curated.media[0].uri = curated.media[0].location = f"{video_file / 'shard.tar'}#k1.mp4"
    row = _built(curated, "vnothink", "no_think")
    variants = VideoVariants(make_cfg(*CFG, "media.quality.min_motion=0.5"))   # curation judged it: not again
    variants.setup()
    assert VideoVariants.wants(row)
    rows = variants(row)
    assert [r.id for r in rows] == [row.id + "@16f", row.id + "@32f"]
    for n, variant in zip((16, 32), rows):
        item = variant.media[0]
        assert len(item.frame_timestamps) == n == len(item.members) and variant.mode == "no_think"
        assert item.visual_tokens == n * (item.width // 28) * (item.height // 28)
        assert all(m.startswith(variant.id + ".") for m in item.members) and set(variant.blobs) == set(item.members)
        assert variant.messages == row.messages
    assert rows[0].media[0].frame_timestamps != rows[1].media[0].frame_timestamps


def test_variants_use_the_original_bytes_a_row_still_holds(video_file, tmp_path):
    cfg = make_cfg(*CFG, "media.output.keep=both")
    (tmp_path / "gone.mp4").write_bytes((video_file / "clip.mp4").read_bytes())
    curated = _curated({"video": "gone.mp4", "question": "Which way?", "answer": "Left."}, tmp_path, cfg)
    (tmp_path / "gone.mp4").unlink()                      # the uri is gone, the row kept the bytes
    row = _built(curated, "vnothink", "no_think")
    rows = VideoVariants(cfg)(row)
    assert [len(r.media[0].frame_timestamps) for r in rows] == [16, 32]
    assert all(r.media[0].source_member in r.blobs for r in rows)        # keep: both, as the recipe says


def test_refetch_reports_what_is_missing(video_file):
    assert isinstance(refetch(str(video_file / "clip.mp4"), 10**9), bytes)
    assert refetch(f"{video_file / 'shard.tar'}#k1.mp4", 10**9) == (video_file / "clip.mp4").read_bytes()
    assert refetch(f"{video_file / 'shard.tar'}#nope.mp4", 10**9)[0].value == "missing_media"
    assert refetch(f"{video_file / 'shard.tar'}#k1.mp4", 10)[0].value == "media_too_large"


def test_video_variant_whose_source_is_gone_rejects_the_row(video_file, tmp_path):
    cfg = make_cfg(*CFG)
    (tmp_path / "gone.mp4").write_bytes((video_file / "clip.mp4").read_bytes())
    curated = _curated({"video": "gone.mp4", "question": "Which way?", "answer": "Left."}, tmp_path, cfg)
    (tmp_path / "gone.mp4").unlink()
    row = _built(curated, "vnothink", "no_think")
    out = VideoVariants(cfg)(row)
    assert isinstance(out, Rejected) and (out.stage, out.reason) == ("media", "missing_media")
    assert out.id == row.id


def test_routing_all_or_one_deterministic(tmp_path):
    cfg = make_cfg(*CFG)
    (tmp_path / "a.png").write_bytes(mu.image_bytes(mu.quadrant_image()))
    builders = make_builders(cfg)
    wanting = {"non_thinking", "thinking", "auto_think", "think_with_image"}
    picks = set()
    for i in range(30):
        qa = _curated({"image": "a.png", "question": f"Where is red, {i}?", "answer": "Top left."}, tmp_path, cfg,
                      ref=f"r:{i}")
        assert {b.category for b in route(builders, qa, "all", 0)} == wanting
        (one,) = route(builders, qa, "one", 0)
        assert one is route(builders, qa, "one", 0)[0]
        picks.add(one.category)
    assert picks == wanting                                   # split between the builders that want a row
    caption = _curated({"image": "a.png", "caption": "a picture"}, tmp_path, cfg)
    assert route(builders, caption, "all", 0) == []


@pytest.mark.parametrize("name", ["curate", "build_mixture"])
def test_python_dash_m_loads_the_pipeline_module_once(name):
    """`python -m pipelines.NAME` runs the module as __main__; the registry must not import it again."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-X", "importtime", "-m", f"pipelines.{name}", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "--output" in p.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()]
    assert f"pipelines.{name}" not in imported
