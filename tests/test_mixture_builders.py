"""The builders that need no generation: non-thinking from QA rows, and video QA rows at 16 and
32 frames re-fetched from their uri (file or tar member) after curation dropped the bytes."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from filters.media import MediaFilter
from mixture.instruct import NonThinkingBuilder
from mixture.variants import VideoBuilder, derive
from pipelines.mixture import mode_builders, route
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


def _curated(payload, base_dir, cfg) -> Sample:
    """A row as curation leaves it: validated, media decoded and kept as sampled frames only."""
    from schemas.input import normalize_row

    sample = normalize_row(payload, row_context(str(base_dir), source_ref="r:1"))
    out = MediaFilter(cfg)(sample)
    assert isinstance(out, Sample), out
    return out


def test_non_thinking_from_qa_rows(tmp_path):
    cfg = make_cfg(*CFG)
    (tmp_path / "a.png").write_bytes(mu.image_bytes(mu.quadrant_image()))
    qa = _curated({"image": "a.png", "question": "Where is the red quadrant?", "answer": "Top left."}, tmp_path, cfg)
    b = NonThinkingBuilder()
    assert b.wants(qa)
    (row,) = b(qa)
    assert row.id == qa.id + "@no_think" and row.mode == "no_think" and row.task == "cold_start"
    assert row.messages[0].content[-1].text == "Where is the red quadrant?/no_think"
    assert qa.messages[0].content[-1].text == "Where is the red quadrant?"        # the input is not touched
    assert row.messages[-1].content[0].text == "Top left." and not row.messages[-1].reasoning
    assert row.media[0].members and all(m.startswith(row.id + ".") for m in row.media[0].members)
    assert set(row.blobs) == set(row.media[0].members)
    caption = _curated({"image": "a.png", "caption": "four quadrants"}, tmp_path, cfg)
    thinking = _curated({"image": "a.png", "question": "Where?", "answer": "Top left.", "reasoning": "I look."},
                        tmp_path, cfg)
    assert not b.wants(caption) and not b.wants(thinking)


@pytest.mark.parametrize("where", ["file", "tar"])
def test_video_variants_at_16_and_32_frames(video_file, where):
    cfg = make_cfg(*CFG)
    payload = {"video": "clip.mp4", "question": "Which way does it move?", "answer": "Left.",
               "reasoning": "The texture shifts to the right each frame, so the view moves left."}
    curated = _curated(payload, video_file, cfg)
    assert curated.media[0].source_member is None and len(curated.media[0].frame_timestamps) not in (16, 32)
    if where == "tar":
        curated.media[0].uri = f"{video_file / 'shard.tar'}#k1.mp4"
    think, no_think = VideoBuilder(cfg, "video_think"), VideoBuilder(cfg, "video_no_think")
    assert think.wants(curated) and not no_think.wants(curated)
    think.setup()
    rows = think(curated)
    assert [r.id for r in rows] == [curated.id + "@16f", curated.id + "@32f"]
    for n, row in zip((16, 32), rows):
        item = row.media[0]
        assert len(item.frame_timestamps) == n == len(item.members) and row.mode == "think"
        assert item.visual_tokens == n * (item.width // 28) * (item.height // 28)
        assert all(m.startswith(row.id + ".") for m in item.members) and set(row.blobs) == set(item.members)
        assert row.messages[-1].content[0].text == "<answer>Left.</answer>"
        assert row.messages[-1].reasoning and row.messages[0].content[-1].text.endswith("?/think")
    assert rows[0].media[0].frame_timestamps != rows[1].media[0].frame_timestamps


def test_video_variant_whose_source_is_gone_rejects_the_input(video_file, tmp_path):
    cfg = make_cfg(*CFG)
    (tmp_path / "gone.mp4").write_bytes((video_file / "clip.mp4").read_bytes())
    curated = _curated({"video": "gone.mp4", "question": "Which way?", "answer": "Left."}, tmp_path, cfg)
    (tmp_path / "gone.mp4").unlink()
    out = VideoBuilder(cfg, "video_no_think")(curated)
    assert isinstance(out, Rejected) and (out.stage, out.reason) == ("media", "missing_media")
    assert out.id == curated.id


def test_routing_is_exclusive_and_deterministic(tmp_path):
    cfg = make_cfg(*CFG)
    (tmp_path / "a.png").write_bytes(mu.image_bytes(mu.quadrant_image()))
    qa = _curated({"image": "a.png", "question": "Where is red?", "answer": "Top left."}, tmp_path, cfg)

    class Also(NonThinkingBuilder):
        category = "also"

    builders = mode_builders(cfg) + [Also()]
    picks = {route(builders, derive(qa, f"t{i}", "no_think"), seed=0).category for i in range(40)}
    assert picks == {"non_thinking", "also"}                 # split between the builders that want it
    assert route(builders, qa, 0) is route(builders, qa, 0)
    caption = _curated({"image": "a.png", "caption": "a picture"}, tmp_path, cfg)
    assert route(builders, caption, 0) is None
