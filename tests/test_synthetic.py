"""The synthetic corpus is deterministic, and truth.jsonl says what the pipeline really does.

Truth is checked against the project's own code, not against assumptions: every manifest is
read with ingest/readers.py (files found and named as the ingest stage names them), every
row goes through ValidateRows, TextFilter and MediaFetch, and exact duplicates are grouped
with filters/exact.py. Media facts in truth (sizes, frame counts, defects) are checked by
decoding the bytes the media stage fetched.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections import defaultdict

import av
import numpy as np
import pytest
from PIL import Image

from filters.exact import content_key, pick_representative
from filters.text import TextFilter
from ingest.readers import read_file
from ingest.inputs import file_tasks
from ingest.validate import ValidateRows
from media.fetch import MediaFetch
from schemas.config import load_config
from schemas.rejected import Rejected
from schemas.sample import sample_id
from synthetic.corpus import corpus_recipe, generate
from synthetic.tree import CURRENT_DETECTOR
from synthetic.language import jaccard


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    summary = generate(root)
    with open(os.path.join(root, "truth.jsonl"), encoding="utf-8") as f:
        truth = [json.loads(line) for line in f]
    return root, summary, truth


@pytest.fixture(scope="module")
def pipeline(corpus):
    """(source, source_ref) -> {"task", "rejected", "sample", "dup_kept"}: the curation stages
    in pipelines/curate.py order (validate, text, media, exact dedupe), run without Beam."""
    cfg = corpus_recipe(load_config(), corpus[0])     # its manifests, and its media folder as a media root
    (spec,) = cfg.inputs
    steps = [TextFilter(cfg), MediaFetch(cfg)]
    validate = ValidateRows(cfg)
    outcome, survivors = {}, []
    for task in file_tasks(spec, cfg):
        for raw in read_file(task):
            key = (raw.source, raw.source_ref)
            assert key not in outcome, f"two rows named {key}"
            result = validate(raw)
            row_task = None if isinstance(result, Rejected) else result.task
            for step in steps:
                if isinstance(result, Rejected):
                    break
                result = step(result)
            rejected = result if isinstance(result, Rejected) else None
            outcome[key] = {"task": row_task, "rejected": rejected, "sample": None if rejected else result,
                            "dup_kept": None}
            if rejected is None:
                survivors.append(result)
    groups = defaultdict(list)
    for s in survivors:
        groups[content_key(s)].append(s)
    for members in groups.values():
        if len(members) > 1:
            kept = pick_representative([s.id for s in members])
            for s in members:
                outcome[(s.source, s.source_ref)]["dup_kept"] = s.id == kept
    return outcome


def _hashes(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_same_seed_gives_byte_identical_tree(corpus, tmp_path):
    root, summary, _ = corpus
    again = str(tmp_path / "again")
    assert generate(again) == summary
    first, second = _hashes(root), _hashes(again)
    assert sorted(first) == sorted(second)
    assert [p for p in first if first[p] != second[p]] == []


def test_video_scale_adds_motion_clips_and_nothing_else(corpus, tmp_path):
    """`video_scale` (trainer.evidence's video-heavy corpus) multiplies the caption and QA clips; every
    other file is byte-identical to the corpus at the same scale, and video_scale=scale is the corpus."""
    root, summary, _ = corpus
    more = str(tmp_path / "videos")
    generate(more, video_scale=3)
    first, second = _hashes(root), _hashes(more)
    changed = {p for p in set(first) | set(second) if first.get(p) != second.get(p)}
    assert changed and all(p.startswith("media/videos/") or p in ("manifests/videos.jsonl", "truth.jsonl",
                                                                  "scenes.jsonl") for p in changed)

    def count(folder: str, prefix: str) -> int:
        with open(os.path.join(folder, "manifests", "videos.jsonl"), encoding="utf-8") as f:
            return sum(json.loads(line)["id"].startswith(prefix) and not json.loads(line)["id"].endswith("_small")
                       for line in f)

    assert (count(more, "vid_0"), count(more, "vqa_")) == (3 * count(root, "vid_0"), 3 * count(root, "vqa_"))


def test_primer_is_one_moving_shape_per_clip_correctly_captioned(tmp_path):
    """`generate_primer` (make_sample --primer-clips, trainer.evidence's curriculum): every clip shows one
    shape moving as its caption says, 2 s long; the same seed gives the same bytes."""
    from synthetic.corpus import generate_primer
    from trainer.motion_probe import caption_head

    root = str(tmp_path / "a")
    summary = generate_primer(root, clips=12)
    assert summary["rows"] == summary["kept_now"] == summary["video_files"] == 12
    assert summary["wrong_captions"] == 0 and summary["benchmark_items"] > 0
    rows = [json.loads(line) for line in open(os.path.join(root, "manifests", "primer.jsonl"), encoding="utf-8")]
    truth = [json.loads(line) for line in open(os.path.join(root, "truth.jsonl"), encoding="utf-8")]
    assert len(rows) == len(truth) == 12 and all(t["caption_correct"] for t in truth)
    for row, t in zip(rows, truth):
        assert caption_head(row["caption"]) and " and " not in row["caption"]     # one shape, and it moves
        assert t["media"][0]["duration_s"] == 2.0
        frames = _decoded(os.path.join(root, "manifests", row["video"]))
        first, last = (np.argwhere(np.abs(f.astype(int) - f[0, 0].astype(int)).sum(-1) > 60).mean(0) for f in
                       (frames[0], frames[-1]))                                 # the shape's centroid (y, x)
        start = caption_head(row["caption"])[1]
        moved = {"left": last[1] - first[1], "right": first[1] - last[1],
                 "top": last[0] - first[0], "bottom": first[0] - last[0]}[start]
        assert moved > 5, (row["caption"], first, last)
    generate_primer(str(tmp_path / "b"), clips=12)
    assert _hashes(root) == _hashes(str(tmp_path / "b"))


def _decoded(path: str) -> list[np.ndarray]:
    with av.open(path) as f:
        return [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]


def test_generate_replaces_a_previous_corpus(tmp_path):
    stale = tmp_path / "media" / "images" / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")
    generate(str(tmp_path))
    assert not stale.exists() and (tmp_path / "notes.txt").exists()


def test_truth_has_one_line_per_input_row(corpus, pipeline):
    _, summary, truth = corpus
    keys = [(t["source"], t["source_ref"]) for t in truth]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert set(keys) == set(pipeline)
    assert all(t["id"] == sample_id(t["source"], t["source_ref"]) for t in truth)
    assert summary["rows"] == len(truth)


def test_expectations_match_the_pipeline(corpus, pipeline):
    mismatches = []
    for t in corpus[2]:
        got = pipeline[(t["source"], t["source_ref"])]
        rejected = got["rejected"]
        if rejected is None and got["dup_kept"] is False:
            actual = {"stage": "exact_dedupe", "reason": "exact_duplicate", "detected_by": "exact_dedupe"}
        elif rejected is not None:
            actual = {"stage": rejected.stage, "reason": rejected.reason, "detected_by": CURRENT_DETECTOR[rejected.stage]}
        else:
            actual = None
        if actual != t["expect"]:
            mismatches.append((t["source_ref"], "expect", t["expect"], actual))
        if got["task"] != t["task"]:
            mismatches.append((t["source_ref"], "task", t["task"], got["task"]))
        if got["dup_kept"] != t["dup_kept"]:
            mismatches.append((t["source_ref"], "dup_kept", t["dup_kept"], got["dup_kept"]))
        if (t["kind"] == "broken") != (t["task"] is None):
            mismatches.append((t["source_ref"], "kind", t["kind"], t["task"]))
    assert mismatches == []


def test_every_planted_defect_is_present(corpus):
    truth = corpus[2]
    rejected = {(t["expect"]["stage"], t["expect"]["reason"]) for t in truth if t["expect"]}
    assert rejected == {
        ("ingest", "malformed_json"), ("ingest", "invalid_utf8"), ("ingest", "row_too_large"),
        ("ingest", "truncated_archive"), ("validate", "wrong_type"), ("validate", "not_an_object"),
        ("validate", "unknown_role"), ("validate", "media_marker_mismatch"), ("validate", "unsupported_uri"),
        ("media", "missing_media"), ("media", "empty_media"), ("text", "empty_text"),
        ("text", "repetitive_text"), ("exact_dedupe", "exact_duplicate"),
    }
    assert {t["source_ref"] for t in truth if t["expect"] and t["expect"]["reason"] == "malformed_json"} \
        == {"broken.jsonl:1", "broken.json:3"}
    assert {t["media_defect"] for t in truth} - {None} == {
        "static", "dark", "blurry", "too_short", "single_frame", "truncated", "not_a_video",
        "no_video_stream", "missing", "empty"}
    assert {t["future"]["reason"] for t in truth if t["future"]} == {
        "truncated_media", "not_a_video", "no_video_stream", "too_dark", "static", "blurry", "too_short",
        "near_duplicate", "semantic_duplicate", "contaminated"}
    assert all(t["expect"] is None for t in truth if t["future"]), "future verdicts are for rows kept today"
    assert {t["near_dup_kind"] for t in truth} - {None} == {"text", "image", "video"}
    assert {t["contaminated_by"]["kind"] for t in truth if t["contaminated_by"]} == {"image", "text"}
    assert sum(t["scene_cut"] for t in truth) == 1

    groups = defaultdict(list)
    for t in truth:
        if t["dup_group"]:
            groups[t["dup_group"]].append(t)
    assert len(groups) >= 3
    for members in groups.values():
        assert [m["dup_kept"] for m in members].count(True) == 1
        assert min(members, key=lambda m: m["id"])["dup_kept"]
    assert len({m["source"] for m in groups["g1"]}) == 2, "one group spans two sources"

    pairs = [t for t in truth if t["caption_correct"] is not None]
    wrong = sum(t["caption_correct"] is False for t in pairs)
    assert 0.05 <= wrong / len(pairs) <= 0.15
    assert {t["kind"] for t in truth} >= {"caption_image", "caption_video", "qa_image", "qa_video",
                                          "cold_start", "chat", "interleaved", "text", "broken"}


def test_near_duplicate_text_jaccard_is_true(corpus):
    root, _, truth = corpus
    texts = {}
    with open(os.path.join(root, "manifests", "chat.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            texts[f"chat.jsonl:{i}"] = json.loads(line).get("text")
    edited = [t for t in truth if t["near_dup_kind"] == "text"]
    assert edited
    for t in edited:
        j = jaccard(texts[t["near_dup_of"]], texts[t["source_ref"]])
        assert 0.7 < j < 1 and t["jaccard"] == round(j, 4)


def test_benchmark_and_planted_contamination(corpus):
    root, _, truth = corpus
    with open(os.path.join(root, "benchmark", "bench.jsonl"), encoding="utf-8") as f:
        bench = {b["id"]: b for b in map(json.loads, f)}
    assert len(bench) >= 12 and sum("video" in b for b in bench.values()) == 2
    for b in bench.values():
        assert os.path.getsize(os.path.join(root, "benchmark", b.get("image") or b["video"])) > 0
        assert len(b["question"].split()) >= 13

    def grams(text: str) -> set:
        words = text.lower().split()
        return {tuple(words[i:i + 13]) for i in range(len(words) - 12)}

    bench_grams = {g: b["id"] for b in bench.values() for g in grams(b["question"])}
    leaks = set()
    for name in sorted(os.listdir(os.path.join(root, "manifests"))):
        if name.endswith(".jsonl"):
            with open(os.path.join(root, "manifests", name), "rb") as f:
                for i, line in enumerate(f, 1):
                    text = line.decode("utf-8", "replace")
                    if len(text) < 100_000 and grams(text) & bench_grams.keys():
                        leaks.add(f"{name}:{i}")
    planted = {t["source_ref"] for t in truth if (t["contaminated_by"] or {}).get("kind") == "text"}
    assert leaks == planted, "benchmark questions leak only where planted"

    image_leak = next(t for t in truth if (t["contaminated_by"] or {}).get("kind") == "image")
    original = Image.open(os.path.join(root, "benchmark", bench[image_leak["contaminated_by"]["item"]]["image"]))
    leaked = image_leak["media"][0]
    assert (leaked["width"], leaked["height"]) == (round(original.width * 0.9), round(original.height * 0.9))


def _decode(data: bytes) -> tuple[dict, list[np.ndarray]]:
    """(width, height and fps of the first video stream, its frames as RGB arrays)."""
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        info = {"width": stream.width, "height": stream.height, "fps": float(stream.average_rate)}
        return info, [f.to_ndarray(format="rgb24") for f in c.decode(stream)]


def _steepest_edge(frame: np.ndarray) -> float:
    """The largest brightness step between neighbouring pixels: a sharp shape border is a
    step of tens of levels, a heavily blurred one a few."""
    g = frame.astype(np.float32).mean(axis=2)
    return float(max(np.abs(np.diff(g, axis=0)).max(), np.abs(np.diff(g, axis=1)).max()))


def test_media_facts_match_the_fetched_bytes(corpus, pipeline):
    """Decode every medium of every kept row: sizes, frame counts and defects are as truth says."""
    edges = {}
    for t in corpus[2]:
        sample = pipeline[(t["source"], t["source_ref"])]["sample"]
        if sample is None:
            continue
        assert len(sample.media) == len(t["media"])
        for item, m in zip(sample.media, t["media"]):
            data = sample.blobs[item.members[0]]
            assert item.kind == m["kind"]
            if m["kind"] == "image":
                assert Image.open(io.BytesIO(data)).size == (m["width"], m["height"]), t["source_ref"]
                continue
            defect = t["media_defect"]
            if defect == "not_a_video":
                with pytest.raises(av.error.InvalidDataError):
                    av.open(io.BytesIO(data))
                continue
            if defect == "truncated":
                with pytest.raises(av.error.FFmpegError):
                    _decode(data)
                continue
            if defect == "no_video_stream":
                with av.open(io.BytesIO(data)) as c:
                    assert not c.streams.video and c.streams.audio
                continue
            info, frames = _decode(data)
            assert (info["width"], info["height"], info["fps"], len(frames)) == \
                (m["width"], m["height"], m["fps"], m["frames"]), t["source_ref"]
            assert m["duration_s"] == round(m["frames"] / m["fps"], 3)
            if defect == "dark":
                assert np.mean(frames) < 5
            elif defect == "static":
                # identical input frames; only coding noise differs between I, P and B frames
                assert max(np.abs(f.astype(int) - frames[0]).mean() for f in frames) < 0.5
            elif defect == "too_short":
                assert m["duration_s"] < 0.5
            elif defect == "single_frame":
                assert len(frames) == 1
            elif not t["scene_cut"]:
                assert 1.5 <= m["duration_s"] <= 4.0
            key = defect or ("cut" if t["scene_cut"] else "ok")
            edges.setdefault(key, []).append(np.mean([_steepest_edge(f) for f in frames]))
            if t["scene_cut"]:
                half = len(frames) // 2
                jumps = [np.abs(frames[i].astype(int) - frames[i - 1]).mean() for i in range(1, len(frames))]
                assert int(np.argmax(jumps)) + 1 == half and jumps[half - 1] > 10 * np.median(jumps)
    assert max(edges["blurry"]) < 0.25 * min(edges["ok"]), "the blurry clip has no sharp edges"
