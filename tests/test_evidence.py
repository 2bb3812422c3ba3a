"""trainer.evidence's scorer: what a caption says, per attribute, and the chance levels it is compared with.

The evidence run itself (data, training, captioning) is a bench-style command, not a test; these
check the parts that turn captions into the README's figures."""
from __future__ import annotations

import numpy as np

from synthetic import language as lang
from synthetic.scenes import Clip, random_scene
from trainer.evidence import attributes, chance, f1, groups, score, shape_count


def test_attributes_of_the_corpus_captions():
    a = attributes("a red circle, an orange square and a blue circle on a pale blue gradient background")
    assert a == {"colour": {"red", "orange", "blue"}, "shape": {"circle", "square"}, "direction": set(),
                 "background": {"pale blue"}}     # "pale blue" is the background, not a shape's colour
    v = attributes("a green triangle moves from right to left and a red square stays still on a white background")
    assert v["direction"] == {"right to left", "still"} and v["shape"] == {"triangle", "square"}


def test_attributes_read_plural_forms():
    a = attributes("two red circles move from left to right on a cream background")
    assert a["shape"] == {"circle"} and a["colour"] == {"red"} and a["direction"] == {"left to right"}


def test_attributes_of_every_generated_caption_match_the_scene():
    rng = np.random.default_rng(3)
    for _ in range(50):
        scene = random_scene(rng, 200, 160, int(rng.integers(1, 5)))
        a = attributes(lang.caption(scene))
        assert a["shape"] == {s.kind for s in scene.shapes} and a["colour"] == {s.colour for s in scene.shapes}
        assert shape_count(lang.caption(scene)) == len(scene.shapes)
        clip = Clip(scene, ("top to bottom",) + (None,) * (len(scene.shapes) - 1), fps=10, frames=20)
        d = attributes(lang.motion_caption(clip))["direction"]
        assert d == {"top to bottom"} | ({"still"} if len(scene.shapes) > 1 else set())


def test_f1_and_score():
    assert f1(set(), set()) == 1.0 and f1({"a"}, set()) == 0.0
    assert f1({"a", "b"}, {"a"}) == 2 / 3
    caps = ["a red circle on a white background", "a blue square on a cream background"]
    assert score(caps, caps, ("colour", "shape", "background")) == {"colour": 1.0, "shape": 1.0, "background": 1.0}
    assert score(caps, caps[::-1], ("colour", "shape"))["shape"] == 0.0


def test_chance_is_every_other_caption_of_the_group():
    items = [{"kind": "image", "caption": c} for c in ("a red circle on a white background",
                                                        "a red square on a white background",
                                                        "a red circle and a blue square on a white background")]
    items.append({"kind": "video", "caption": "a red circle moves from left to right on a white background"})
    g = groups(items)
    assert g["image"][0] == [0, 1, 2] and g["image_one_shape"][0] == [0, 1] and g["video_one_shape"][0] == [3]
    c = chance(items)
    # image shape: pairs (0,1) 0, (0,2) 2/3, (1,0) 0, (1,2) 2/3, (2,0) 2/3, (2,1) 2/3 -> 4/3 / 6 * 2
    assert c["image_other_caption"]["shape"] == round((4 * 2 / 3) / 6, 4)
    assert c["image_one_shape_other_caption"]["shape"] == 0.0 and c["image_other_caption"]["colour"] > 0.5
    assert c["video_other_caption"] == {"colour": 0.0, "shape": 0.0, "direction": 0.0, "background": 0.0}
    assert c["items"]["image"] == 3 and c["uniform"]["shape"] == round(1 / 3, 4)
