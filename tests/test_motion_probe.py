"""trainer/motion_probe.py: the direction a model picks with the frames in order and reversed.

Two stand-in models behind the trainer's model interface (`logits`, `to_local`, `visual_ids`): an
oracle that reads the shape's motion from the first and last frames it is given, and a blind one
that always says "top". The probe must score the oracle perfect both ways and the blind one at its
share of "top" clips, unchanged when reversed.
"""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from keye.tokenizer import load_tokenizer
from schemas.sample import MediaItem
from synthetic.language import motion_caption
from synthetic.scenes import DIRECTIONS, Clip, clip_frames, random_scene
from trainer.motion_probe import FIRST_WORDS, ProbeClip, caption_head, probe_model, training_clips

W, H, FRAMES = 112, 84, 4


class StandIn(torch.nn.Module):
    """Logits over the full vocabulary with one word preferred: by `pick(frames)` or always `word`."""

    def __init__(self, tok, word=None):
        super().__init__()
        self.ids = {w: tok.encode(" " + w)[0] for w in FIRST_WORDS}
        self.word = word
        self.register_buffer("visual_ids", torch.zeros(1, dtype=torch.long))

    def to_local(self, ids):
        return ids

    @staticmethod
    def centre(frame):
        """Centroid (x, y) of the saturated pixels: the shapes (backgrounds are greys, cream and pale blue)."""
        saturation = frame.amax(0) - frame.amin(0)          # SigLIP-normalised: 2 x (max - min) / 255
        ys, xs = (saturation > 0.6).nonzero(as_tuple=True)
        return float(xs.float().mean()), float(ys.float().mean())

    def logits(self, ids, positions, seq_lens, pixels):
        word = self.word
        if word is None:
            (x0, y0), (x1, y1) = self.centre(pixels[0]), self.centre(pixels[-1])
            word = ("left" if x1 > x0 else "right") if abs(x1 - x0) > abs(y1 - y0) else ("top" if y1 > y0 else "bottom")
        out = torch.zeros(1, ids.shape[1], max(self.ids.values()) + 1)
        out[0, -1, self.ids[word]] = 1.0
        return out


def clip_of(rng, direction, second=None, fast=False):
    scene = random_scene(rng, W, H, 2 if second else 1)
    clip = Clip(scene, (direction, second)[:len(scene.shapes)], fps=2, frames=FRAMES)
    blobs = []
    for i, frame in enumerate(clip_frames(clip)):
        img = Image.fromarray(np.asarray(frame))
        if fast and i % 2:
            img = img.resize((W // 2, H // 2))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        blobs.append(buf.getvalue())
    members = [f"c.0.{i:03d}.png" for i in range(FRAMES)]
    item = MediaItem(kind="video", uri="c", width=W, height=H, members=members,
                     fast_width=W // 2 if fast else None, fast_height=H // 2 if fast else None,
                     frame_timestamps=[i * 0.5 for i in range(FRAMES)],
                     frame_types=[i % 2 if fast else 0 for i in range(FRAMES)],
                     visual_tokens=(W // 28) * (H // 28) * FRAMES)
    return ProbeClip(item, blobs, motion_caption(clip))


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(3)
    return [clip_of(rng, d) for d in DIRECTIONS for _ in range(2)]


def test_caption_head_reads_the_first_shapes_direction():
    assert caption_head("a red circle moves from left to right on a white background") == \
        ("a red circle moves from", "left")
    assert caption_head("an orange square moves from bottom to top and a blue circle stays still on a cream "
                        "background") == ("an orange square moves from", "bottom")
    assert caption_head("a red circle stays still and a blue square moves from left to right on a white "
                        "background") is None


@pytest.mark.parametrize("layout", ["keye_1_5", "keye_preview"])
def test_a_model_that_reads_motion_is_right_both_ways(clips, layout):
    tok = load_tokenizer()
    got = probe_model(StandIn(tok), tok, layout, None, clips)
    assert got["clips"] == 8 and got["skipped_mixed_sizes"] == 0
    assert got["accuracy"] == got["accuracy_reversed"] == got["flips_when_reversed"] == 1.0
    assert got["same_when_reversed"] == 0.0
    assert got["picked"] == {w: 2 for w in sorted(FIRST_WORDS)}


def test_a_model_blind_to_motion_picks_the_same_word_both_ways(clips):
    tok = load_tokenizer()
    got = probe_model(StandIn(tok, word="top"), tok, "keye_1_5", None, clips)
    assert got["accuracy"] == 0.25 and got["accuracy_reversed"] == 0.25     # the two top-to-bottom clips
    assert got["same_when_reversed"] == 1.0 and got["flips_when_reversed"] == 0.0


def test_clips_without_a_moving_first_shape_or_with_fast_frames_are_left_out():
    tok = load_tokenizer()
    rng = np.random.default_rng(4)
    fast = clip_of(rng, "left to right", fast=True)
    still = clip_of(rng, "left to right")
    still.caption = "a red circle stays still on a white background"
    got = probe_model(StandIn(tok), tok, "keye_1_5", None, [fast, still, clip_of(rng, "top to bottom", "left to right")])
    assert got["clips"] == 1 and got["skipped_mixed_sizes"] == 1 and got["accuracy"] == 1.0


def test_training_clips_are_the_folders_video_caption_rows(trainer_data):
    data, _ = trainer_data
    got = training_clips(str(data), limit=5)
    assert 0 < len(got) <= 5
    for c in got:
        assert caption_head(c.caption) and c.item.kind == "video"
        assert len(c.blobs) == len(c.item.members) and all(b[:2] == b"\xff\xd8" or b[:4] == b"\x89PNG" for b in c.blobs)


def test_the_capacity_bench_trains_on_rows_the_template_accepts(capsys):
    from bench.motion_capacity import main

    main(["--steps", "3", "--clips", "8", "--fresh", "4", "--batch", "2", "--two", "0.5", "--frames", "4,6",
          "--reversed-share", "0.5"])
    report = json.loads(capsys.readouterr().out)
    assert report["clips"]["visual_tokens_per_clip"] == [36 * 4, 36 * 6]   # 168 px frames: 6x6 tokens, 4 or 6 frames
    assert report["untrained"]["clips"] == report["trained"]["clips"] == 4
    assert report["loss"]["first_50"] > 0 and report["accuracy_vs_chance"] >= 0


def test_the_capacity_bench_on_a_folders_video_rows_holds_out_its_probe_clips(trainer_data, capsys):
    from bench.motion_capacity import folder_rows, main

    data, _ = trainer_data
    rows, fresh, _, _ = folder_rows(str(data), 2, 0.5)
    assert fresh and all(c.item.width % 28 == 0 and c.item.height % 28 == 0 for c in fresh)
    assert not {id(c.item) for c in fresh} & {id(m) for r in rows for m in r.media}
    main(["--data", str(data), "--fresh", "2", "--frame-scale", "0.5", "--steps", "3", "--batch", "2", "--warm-steps", "1",
          "--clips", "4"])
    report = json.loads(capsys.readouterr().out)
    assert report["clips"]["train"] == len(rows) and report["trained"]["clips"] == len(fresh)
    assert report["clips"]["warm_steps_on_generated_clips"] == 1
