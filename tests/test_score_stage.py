"""The score stage through Beam: RunInference gives the same scores as the plain loop, thresholds
are per (source, task) percentiles or absolute values, and rows are kept, routed or dropped."""
from __future__ import annotations

import numpy as np
import pytest

from captioners import scoring
from captioners.clip import ClipRef, ClipScorer
from captioners.routing import route
from pipelines.score import CLIP_CAPTION_UNITS, Score
from tests.conftest import make_cfg
from tests.score_util import grounding_row, image_row, interleaved_row, run_stages, scene, video_row

MODEL = ["score.enabled=true", "score.model=builtin:tiny-clip-synth", "score.pretrained=null"]


def rows():
    out = []
    for i in range(24):
        img, right, wrong = scene(100 + i, shapes=1 + i % 3)
        out.append(image_row(f"a.jsonl:{i}", wrong if i % 4 == 0 else right, img, source="a"))
    for i in range(12):
        img, right, wrong = scene(200 + i, shapes=2)
        out.append(image_row(f"b.jsonl:{i}", wrong if i % 3 == 0 else right, img, source="b"))
    frames = [scene(300 + k)[0] for k in range(5)]
    out.append(video_row("v.jsonl:1", scene(300)[1], frames, [0.5 * k for k in range(5)], source="v"))
    img, right, _ = scene(400, 200, 160, 3)
    out.append(grounding_row("g.jsonl:1", img, "Find the shape.",
                             "<|object_ref_start|>the shape<|object_ref_end|><|box_start|>[[0,0,500,500]]<|box_end|>",
                             source="g"))
    out.append(interleaved_row("i.jsonl:1", ["First:", 0, "second:", 1], [scene(401)[0], scene(402)[0]], source="i"))
    qa = image_row("q.jsonl:1", "Two.", scene(403)[0], source="q", task="vqa")
    qa.messages[0].content.append(type(qa.messages[0].content[0])("text", text="How many shapes?"))
    out.append(qa)
    bad = image_row("x.jsonl:1", "broken", scene(404)[0], source="x")
    bad.blobs[bad.media[0].members[0]] = b"not an image"
    out.append(bad)
    return out


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(ClipRef("builtin:tiny-clip-synth"), device="cpu")


@pytest.fixture(scope="module")
def expected(scorer):
    """Scores from the plain Beam-free loop (captioners.scoring.score_sample), by row id."""
    out = {}
    for s in rows():
        r = scoring.score_sample(s, scorer)
        out[s.id] = r
    return out


RULES = ("score.rules=["
         "{source: b, task: caption, kind: absolute, value: 0.9, below: drop},"
         "{source: null, task: caption, kind: percentile, value: 25, below: recaption},"
         "{source: null, task: video, kind: absolute, value: 1.0, below: recaption},"
         "{source: null, task: grounding, kind: absolute, value: 1.0, below: drop},"
         "{source: null, task: interleaved, kind: absolute, value: -1.0, below: drop}]")


@pytest.fixture(scope="module")
def staged():
    cfg = make_cfg(*MODEL, RULES, "recaption.enabled=true", "score.min_batch_images=1", "score.max_batch_images=7")
    kept, rejected = run_stages([("Score", Score(cfg))], rows())
    return cfg, {s.id: s for s in kept}, {r.id: r for r in rejected}


def test_a_row_that_breaks_the_plan_is_a_dead_letter(monkeypatch):
    """The same dead-letter behaviour as every stage: a step_error rejection, the job goes on."""
    from apache_beam.pvalue import TaggedOutput

    from pipelines import score
    from pipelines.common import REJECTED

    def bug(*args):
        raise ZeroDivisionError("a bug in plan")

    monkeypatch.setattr(score, "plan", bug)
    row = image_row("c.jsonl:9", "a caption", scene(9)[0])
    [out] = score._Prepare(make_cfg(*MODEL)).process(row)
    assert isinstance(out, TaggedOutput) and out.tag == REJECTED
    assert (out.value.stage, out.value.reason, out.value.id) == ("score", "step_error", row.id)
    assert out.value.detail.startswith("ZeroDivisionError: a bug in plan")


def test_every_row_is_kept_or_rejected_once(staged):
    _, kept, rejected = staged
    assert len(kept) + len(rejected) == len(rows()) and not set(kept) & set(rejected)


def test_runinference_scores_equal_the_plain_loop_bit_for_bit(staged, expected):
    """Beam batched rows with other rows (7 pictures per batch at most); batch invariance makes
    every score and vector identical to scoring the row alone."""
    _, kept, rejected = staged
    for sid, r in expected.items():
        if isinstance(r, scoring.Unscored):
            assert sid in kept and not any(k.startswith("clip") for k in kept[sid].scores)
            continue
        if sid in rejected:
            continue
        s = kept[sid]
        assert {k: v for k, v in s.scores.items() if k != "clip_threshold"} == r.scores
        assert np.array_equal(s.embeddings["clip_image"], r.clip_image)
        assert np.array_equal(s.embeddings["clip_text"], r.clip_text)


def test_percentile_threshold_is_per_source_and_task(staged, expected):
    _, kept, _ = staged
    a = {sid: r.scores["clip_score"] for sid, r in expected.items() if kept.get(sid) and kept[sid].source == "a"}
    thresholds = {kept[sid].scores["clip_threshold"] for sid in a}
    assert len(a) == 24 and len(thresholds) == 1
    t = thresholds.pop()
    ordered = sorted(a.values())
    assert ordered[5] < t < ordered[6]                 # 25% of 24 rows lie below it
    routed = {sid for sid in a if route(kept[sid], make_cfg(*MODEL, RULES).score.rules) == "recaption"}
    assert routed == {sid for sid, v in a.items() if v < t} and len(routed) == 6
    for sid in a:                                      # only routed rows keep the units the recaption stage needs
        assert (CLIP_CAPTION_UNITS in kept[sid].embeddings) == (sid in routed)


def test_absolute_threshold_drops_with_a_reason(staged, expected):
    _, kept, rejected = staged
    b = {sid: r.scores["clip_score"] for sid, r in expected.items() if sid in kept or sid in rejected
         if (kept.get(sid) or rejected.get(sid)).source == "b"}
    dropped = {sid for sid, v in b.items() if v < 0.9}
    assert dropped and dropped == {sid for sid in rejected if sid in b}
    for sid in dropped:
        r = rejected[sid]
        assert (r.stage, r.reason) == ("score", "low_clip_score") and "< 0.9000 (absolute)" in r.detail
    assert all(kept[sid].scores["clip_threshold"] == 0.9 for sid in b if sid not in dropped)


def test_video_grounding_and_interleaved_rules_in_the_stage(staged):
    _, kept, rejected = staged
    by_source = {s.source: s for s in kept.values()}
    video = by_source["v"]
    assert video.scores["clip_score"] == video.scores["clip_video_mean"] <= video.scores["clip_video_max"]
    assert video.scores["clip_threshold"] == 1.0 and CLIP_CAPTION_UNITS in video.embeddings
    assert by_source["i"].scores["clip_score"] == by_source["i"].scores["clip_interleaved_min"]
    grounding = [r for r in rejected.values() if r.source == "g"]
    assert len(grounding) == 1 and grounding[0].reason == "low_clip_score"
    qa = by_source["q"]
    assert "clip_image_text" in qa.scores and "clip_score" not in qa.scores and "clip_threshold" not in qa.scores
    assert not any(k.startswith("clip") for k in by_source["x"].scores)      # undecodable: unscored, kept


def test_scores_survive_the_parquet_round_trip(staged):
    import pyarrow as pa

    from schemas.sample import SAMPLE_SCHEMA, Sample

    _, kept, _ = staged
    table = pa.Table.from_pylist([s.to_row() for s in kept.values()], schema=SAMPLE_SCHEMA)
    back = {r["id"]: Sample.from_row(r) for r in table.to_pylist()}
    assert all(back[sid].scores == s.scores for sid, s in kept.items())


def test_large_model_shares_one_model_per_machine_and_scores_the_same(staged):
    """large_model: Beam serves one model per machine to its worker processes (multi_process_shared)."""
    cfg = make_cfg(*MODEL, RULES, "recaption.enabled=true", "score.large_model=true")
    subset = [r for r in rows() if r.source in ("a", "v")][:8]
    kept, rejected = run_stages([("Score", Score(cfg))], subset)
    _, before, _ = staged
    assert len(kept) == 8 and not rejected
    def clip(scores):    # clip_threshold depends on which rows are in the run; the scores do not
        return {k: v for k, v in scores.items() if k != "clip_threshold"}

    assert all(clip(s.scores) == clip(before[s.id].scores) for s in kept)
