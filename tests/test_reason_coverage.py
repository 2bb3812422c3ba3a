"""Every reason code, produced by the real pipeline: one planted input row per reason.

The planted inputs go through `curate` on the DirectRunner; each must land in rejected/
with exactly the planned (stage, reason), every other row must be kept, and the manifest
must add up. A new Reason without a planted row here fails `test_every_reason_is_planted`
(mixture reasons, `MIXTURE_REASONS`, are planted in tests/test_mixture_reason_coverage.py).
"""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.media import FAULT_ENV, FAULT_PREFIX
from pipelines.curate import build_curate
from tests.archive_util import make_tar
from tests.conftest import free_port
from pipelines.launch import run
from schemas.reasons import MIXTURE_REASONS, Reason, Stage
from schemas.sample import sample_id
from tests import media_util as mu
from tests.dedupe_data import encode, synth_image

OVERRIDES = ["text.min_chars=3", "text.max_chars=5000", "validate.max_field_chars=20000",
             "validate.max_media_per_row=3", "validate.max_messages=6", "media.max_bytes=5000",
             "tokens.max_total_tokens=300", "ingest.max_row_bytes=60000", "text.min_words_for_repetition=20",
             "media.decode.timeout_s=3", "media.decode.max_video_pixels=20000", "media.decode.max_duration_s=20",
             "media.quality.max_scene_changes_per_min=100",
             # CLIP scoring with the bundled tiny model, with rules only for the rows of clip.jsonl: its
             # grounding box scores below 1.0 and is dropped, its caption is below 1.0 and routed to a
             # captioner that is down; rows of other sources match no rule and are never routed
             "score.enabled=true", "score.model=builtin:tiny-clip-synth", "score.pretrained=null",
             "score.rules=[{source: clip, task: grounding, kind: absolute, value: 1.0, below: drop},"
             "{source: clip, task: caption, kind: absolute, value: 1.0, below: recaption}]",
             "recaption.enabled=true", "recaption.openai.max_retries=1", "recaption.openai.timeout_s=5",
             "recaption.openai.backoff_base_s=0.01", "recaption.openai.backoff_max_s=0.02"]


def _png(h, w, seed=0):
    return mu.image_bytes(np.clip(128 + mu.texture(h, w, seed), 0, 255).astype(np.uint8).repeat(3).reshape(h, w, 3))


def _clip(fn, n=20, h=48, w=64, fps=10):
    """A small video (a few KB): n frames of fn(i), 64x48 by default."""
    return mu.encode_video([fn(i, h, w) for i in range(n)], "h264_mp4", fps,
                           options={"crf": "30", "preset": "veryfast"})


def _moving(i, h, w, level=120):
    return np.clip(level + np.roll(mu.texture(h, w), 4 * i, axis=1), 0, 255).astype(np.uint8).repeat(3).reshape(h, w, 3)


def _scenes(i, h, w):
    rng = np.random.default_rng(i // 3)
    cells = np.kron(rng.integers(0, 2, (h // 8 + 1, w // 8 + 1)), np.ones((8, 8)))[:h, :w].astype(bool)
    a, b = ([230, 30, 30], [30, 30, 230]) if (i // 3) % 2 else ([225, 225, 225], [25, 25, 25])
    return np.where(cells[..., None], np.array(a), np.array(b)).astype(np.uint8)


def plant_media(media):
    """Media files for the media-stage reasons: {file name: bytes}."""
    import cv2

    good = _clip(_moving)
    files = {
        "text.mp4": b"these are subtitles, not a video\n" * 10,
        "text.jpg": b"these are not pixels\n" * 10,
        "audio.m4a": mu.audio_only(0.3),
        "cut.mp4": good[: len(good) // 2],
        "zeroed.mp4": mu.zero_payload(good),
        "huge.mp4": _clip(_moving, n=4, h=128, w=176),
        "long.mp4": _clip(_moving, n=25, fps=1),
        "hang.mp4": FAULT_PREFIX + b"hang",
        "crash.mp4": FAULT_PREFIX + b"abort",
        "strip.png": mu.image_bytes(np.full((1, 250, 3), 128, np.uint8)),
        "small.png": _png(20, 20),
        "short.mp4": _clip(_moving, n=5),
        "dark.mp4": _clip(lambda i, h, w: (_moving(i, h, w) // 40).astype(np.uint8)),
        "bright.mp4": _clip(lambda i, h, w: (255 - _moving(i, h, w) // 128).astype(np.uint8)),
        "static.mp4": _clip(lambda i, h, w: _moving(0, h, w)),
        "blurry.mp4": _clip(lambda i, h, w: cv2.GaussianBlur(_moving(i, h, w), (0, 0), 4)),
        "cuts.mp4": _clip(_scenes, n=12),
    }
    for name, data in files.items():
        assert 0 < len(data) <= 5000, (name, len(data))     # under media.max_bytes
        (media / name).write_bytes(data)
    return [("video", "text.mp4", Reason.NOT_A_VIDEO), ("image", "text.jpg", Reason.NOT_AN_IMAGE),
            ("video", "audio.m4a", Reason.NO_VIDEO_STREAM), ("video", "cut.mp4", Reason.TRUNCATED_MEDIA),
            ("video", "zeroed.mp4", Reason.UNDECODABLE), ("video", "huge.mp4", Reason.TOO_MANY_PIXELS),
            ("video", "long.mp4", Reason.VIDEO_TOO_LONG), ("video", "hang.mp4", Reason.DECODE_TIMEOUT),
            ("video", "crash.mp4", Reason.DECODER_CRASHED), ("image", "strip.png", Reason.ASPECT_RATIO),
            ("image", "small.png", Reason.TOO_SMALL), ("video", "short.mp4", Reason.TOO_SHORT),
            ("video", "dark.mp4", Reason.TOO_DARK), ("video", "bright.mp4", Reason.TOO_BRIGHT),
            ("video", "static.mp4", Reason.STATIC), ("video", "blurry.mp4", Reason.BLURRY),
            ("video", "cuts.mp4", Reason.TOO_MANY_SCENE_CHANGES)]


def _words(n, seed):
    import random
    rng = random.Random(seed)
    vocab = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    return " ".join(rng.choice(vocab) + str(rng.randrange(1000)) for _ in range(n))




def plant(root):
    """Write the inputs; return {source_ref: (stage, reason)} for the rows that must be rejected."""
    from tests.score_util import scene

    m, media = root / "in", root / "media"
    m.mkdir()
    media.mkdir()
    (media / "ok.png").write_bytes(_png(48, 48))
    (media / "dup.png").write_bytes(_png(48, 48))   # same bytes, other name
    shapes = mu.image_bytes(scene(1, 64, 48)[0], "JPEG", quality=95)
    (media / "shapes.jpg").write_bytes(shapes)   # a real picture, < 5000 bytes
    (media / "empty.mp4").write_bytes(b"")
    (media / "big.jpg").write_bytes(b"J" * 6000)
    expect = {}
    lines = []

    def line(obj_or_bytes, stage=None, reason=None):
        lines.append(obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode())
        if reason:
            expect[f"rows.jsonl:{len(lines)}"] = (stage, reason)

    line({"image": "../media/ok.png", "caption": "a kept caption"})
    line({"image": "../media/dup.png", "caption": "a kept caption"})
    # of two exact duplicates the one with the smaller id is kept
    dup = max(["rows.jsonl:1", "rows.jsonl:2"], key=lambda ref: sample_id("rows", ref))
    expect[dup] = ("exact_dedupe", Reason.EXACT_DUPLICATE)
    line({"text": "a kept text row with enough words"})
    line(b"{not json", "ingest", Reason.MALFORMED_JSON)
    line(b'{"text": "\xff\xfe"}', "ingest", Reason.INVALID_UTF8)
    line({"text": "x" * 70000}, "ingest", Reason.ROW_TOO_LARGE)
    line([1, 2, 3], "validate", Reason.NOT_AN_OBJECT)
    line({"messages": 5}, "validate", Reason.WRONG_TYPE)
    line({"url": "metadata only"}, "validate", Reason.MISSING_FIELD)
    line({"messages": [{"role": "robot", "content": "beep"}]}, "validate", Reason.UNKNOWN_ROLE)
    line({"text": "fine text", "task": "poetry"}, "validate", Reason.UNKNOWN_TASK)
    line({"text": "fine text", "mode": "dream"}, "validate", Reason.UNKNOWN_MODE)
    line({"text": "y" * 20001}, "validate", Reason.FIELD_TOO_LARGE)
    line({"image": "../media/ok.png", "conversations": [{"from": "human", "value": "<image><image>"},
                                                         {"from": "gpt", "value": "two?"}]},
         "validate", Reason.MEDIA_MARKER_MISMATCH)
    line({"images": ["../media/ok.png"] * 4, "caption": "four"}, "validate", Reason.TOO_MANY_MEDIA)
    line({"messages": [{"role": "user", "content": "hi"}] * 7}, "validate", Reason.TOO_MANY_MESSAGES)
    line({"image": "https://example.com/a.jpg", "caption": "remote"}, "validate", Reason.UNSUPPORTED_URI)
    line(b'{"id": "x-\\ud83d", "text": "a b c d"}', "ingest", Reason.INVALID_UNICODE)
    line(('{"text": "deep", "unread": %s}' % ("[" * 600 + "]" * 600)).encode(), "ingest", Reason.TOO_DEEPLY_NESTED)
    (root / "outside.png").write_bytes(_png(48, 48))
    line({"image": "../outside.png", "caption": "not under a media root"}, "validate", Reason.MEDIA_OUTSIDE_ROOT)
    os.mkfifo(media / "fifo.png")
    line({"image": "../media/fifo.png", "caption": "a FIFO"}, "media", Reason.NOT_A_REGULAR_FILE)
    line({"image": "../media/ok.png", "caption": "  \u200b\x00 "}, "text", Reason.EMPTY_TEXT)
    line({"text": "ab"}, "text", Reason.TEXT_TOO_SHORT)
    line({"text": _words(800, 1)}, "text", Reason.TEXT_TOO_LONG)
    line({"text": "the same words again and again. " * 12}, "text", Reason.REPETITIVE_TEXT)
    line({"image": "../media/nope.png", "caption": "missing"}, "media", Reason.MISSING_MEDIA)
    line({"video": "../media/empty.mp4", "caption": "empty"}, "media", Reason.EMPTY_MEDIA)
    line({"image": "../media/big.jpg", "caption": "too big"}, "media", Reason.MEDIA_TOO_LARGE)
    line({"text": _words(400, 2)}, "tokens", Reason.TOO_MANY_TOKENS)
    for kind, name, reason in plant_media(media):
        line({kind: f"../media/{name}", "caption": f"planted {name}"}, "media", reason)
    # near_dedupe: the same 40 words without the last one; the longer text is kept
    long_text = _words(40, 3)
    line({"text": long_text})
    line({"text": long_text.rsplit(" ", 1)[0]}, "near_dedupe", Reason.NEAR_DUPLICATE)
    # semantic_dedupe: a real picture and a smaller, harsher JPEG of it; the larger is kept
    picture = synth_image(21, 64, 48)
    (media / "pic.jpg").write_bytes(encode(picture, "JPEG", 85))
    (media / "pic_small.jpg").write_bytes(encode(picture, "JPEG", 40, (48, 36)))
    line({"image": "../media/pic.jpg", "caption": "a picture"})
    line({"image": "../media/pic_small.jpg", "caption": "a smaller copy"}, "semantic_dedupe",
         Reason.SEMANTIC_DUPLICATE)
    # decontaminate: a benchmark (outside the inputs) whose image and question training rows copy
    bench = root / "bench"
    bench.mkdir()
    exam = synth_image(22, 64, 48)
    (bench / "exam.jpg").write_bytes(encode(exam, "JPEG", 80))
    (media / "copied_exam.jpg").write_bytes((bench / "exam.jpg").read_bytes())
    question = "which of the three coloured shapes in the upper left corner of the figure is the largest one"
    (bench / "evalset.jsonl").write_text(
        json.dumps({"id": "item-7", "image": "exam.jpg", "question": question, "answer": "the red one"}) + "\n")
    line({"image": "../media/copied_exam.jpg", "caption": "shapes"}, "decontaminate", Reason.CONTAMINATED)
    line({"question": question.capitalize() + "?", "answer": "red"}, "decontaminate", Reason.CONTAMINATED)
    # blobs: a picture whose re-encoded member is changed in the run's blob store (same size, other bytes)
    # before anything reads it; the first stage that reads the member rejects the row (score, here)
    (media / "lost.png").write_bytes(_png(48, 48, seed=5))
    line({"image": "../media/lost.png", "caption": "a picture whose stored member is damaged"}, "score",
         Reason.BLOB_UNREADABLE)
    (m / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    # score and recaption: rows of their own source, the only one the recipe's CLIP rules cover
    grounding = {"messages": [{"role": "user", "content": [{"type": "image", "image": "../media/shapes.jpg"},
                                                           {"type": "text", "text": "Where is the shape?"}]},
                              {"role": "assistant", "content": "<|object_ref_start|>the shape<|object_ref_end|>"
                                                               "<|box_start|>[[100,100,900,900]]<|box_end|>"}]}
    caption = {"image": "../media/shapes.jpg", "caption": "shapes on a background"}
    (m / "clip.jsonl").write_text(json.dumps(grounding) + "\n" + json.dumps(caption) + "\n")
    expect["clip.jsonl:1"] = ("score", Reason.LOW_CLIP_SCORE)
    expect["clip.jsonl:2"] = ("recaption", Reason.RECAPTION_FAILED)

    (m / "broken.parquet").write_bytes(b"PAR1 not really")
    expect["broken.parquet"] = ("ingest", Reason.MALFORMED_PARQUET)
    tar_png = _png(32, 40, seed=3)
    assert len(tar_png) <= 1024               # so that the cut below still falls inside b.png
    (m / "cut.tar").write_bytes(make_tar([("a.png", tar_png), ("a.txt", b"a tar caption"),
                                      ("b.png", b"Q" * 3000), ("b.txt", b"lost")], cut=4000))
    expect["cut.tar#b"] = ("ingest", Reason.TRUNCATED_ARCHIVE)
    (m / "bad.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    expect["bad.jsonl.gz:rest"] = ("ingest", Reason.UNREADABLE_FILE)
    pq.write_table(pa.table({"text": ["a parquet text row"]}), m / "ok.parquet")
    return expect


def damage_stored_member(media, source_ref: str, store: str) -> None:
    """Put same-size wrong bytes where the media stage will store lost.png's re-encoded member: the
    store is content-addressed and keeps a file of the right size, so the damage survives the write."""
    import hashlib

    from filters.media import MediaFilter
    from pipelines.blobstore import BlobStore
    from schemas.config import load_config
    from schemas.input import RowContext, normalize_row

    ctx = RowContext(source="rows", source_ref=source_ref, base_dir=str(media), max_field_chars=100,
                     max_media_per_row=3, max_messages=4)
    step = MediaFilter(load_config(None, OVERRIDES))
    step.setup()
    stored = step(normalize_row({"image": "lost.png", "caption": "x"}, ctx))
    (member,) = stored.blobs.values()
    path = BlobStore(store).path(hashlib.sha256(member).digest())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes(b ^ 0xFF for b in member))


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    import types

    from pipelines.blobstore import store_root

    root = tmp_path_factory.mktemp("reasons")
    expect = plant(root)
    out = root / "out"
    blob_root = root / "blobs"
    lost = next(ref for ref, (_, reason) in expect.items() if reason is Reason.BLOB_UNREADABLE)
    damage_stored_member(root / "media", lost, store_root(
        types.SimpleNamespace(output=types.SimpleNamespace(blob_store=True, blob_root=str(blob_root))), str(out)))
    argv = ["--input", str(root / "in"), "--output", str(out), "--progress_s", "0",
            "--set", f"output.blob_root={blob_root}",
            "--set", f"recaption.openai.base_url=http://127.0.0.1:{free_port()}/v1",
            "--set", f"ingest.media_roots={json.dumps([str(root / 'media')])}"]    # rows name ../media/...
    for o in OVERRIDES + [f"decontaminate.benchmarks=[{{name: evalset, path: {root / 'bench'}}}]"]:
        argv += ["--set", o]
    before = os.environ.get(FAULT_ENV)
    os.environ[FAULT_ENV] = "1"          # hang.mp4 / crash.mp4 misbehave inside the decode worker
    try:
        manifest = run("curate", build_curate, argv)
    finally:
        if before is None:
            os.environ.pop(FAULT_ENV, None)
        else:
            os.environ[FAULT_ENV] = before
    rejected = pq.read_table(str(out / "rejected")).to_pylist()
    return expect, manifest, rejected


def test_every_reason_is_planted(planted_run):
    expect, _, _ = planted_run
    # step_error marks a bug in a stage, so no valid input may produce it: tested below instead.
    # The mixture's reasons are planted through build_mixture (tests/test_mixture_reason_coverage.py).
    assert {r for _, r in expect.values()} == set(Reason) - {Reason.STEP_ERROR} - MIXTURE_REASONS


class _Fragile:
    """A step with a bug on one kind of row."""

    stage = Stage.TEXT

    def setup(self):
        pass

    def __call__(self, sample):
        if "boom" in sample.texts()[0]:
            raise ZeroDivisionError("a bug in the step")
        return sample


def test_step_error_is_a_dead_letter_not_a_crash():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.common import KEPT, REJECTED, ApplyStep
    from schemas.input import RowContext, normalize_row

    ctx = RowContext(source="s", source_ref="r:1", base_dir="/m", max_field_chars=100,
                     max_media_per_row=2, max_messages=4)
    rows = [normalize_row({"text": t}, ctx) for t in ("fine", "boom")]
    with beam.Pipeline() as p:
        out = p | beam.Create(rows) | ApplyStep(_Fragile())
        assert_that(out[KEPT] | "k" >> beam.Map(lambda s: s.texts()[0]), equal_to(["fine"]), label="kept")
        assert_that(out[REJECTED] | "r" >> beam.Map(lambda r: (r.stage, r.reason, r.detail.split(":")[0])),
                    equal_to([("text", "step_error", "ZeroDivisionError")]), label="rejected")


def test_each_planted_row_rejected_with_its_reason(planted_run):
    expect, manifest, rejected = planted_run
    got = {r["source_ref"]: (r["stage"], r["reason"]) for r in rejected}
    assert got == {ref: (stage, reason.value) for ref, (stage, reason) in expect.items()}
    assert all(r["detail"] for r in rejected)
    by_ref = {r["source_ref"]: r for r in rejected}
    for ref, (_stage, reason) in expect.items():
        if reason in (Reason.EXACT_DUPLICATE, Reason.NEAR_DUPLICATE, Reason.SEMANTIC_DUPLICATE):
            assert by_ref[ref]["dup_of"], ref
        if reason is Reason.CONTAMINATED:
            detail = json.loads(by_ref[ref]["detail"])
            assert detail["benchmark"] == "evalset" and detail["item"] == "item-7", detail
            assert detail["rule"] in ("phash", "ngram")


def test_manifest_adds_up(planted_run):
    expect, manifest, _ = planted_run
    t = manifest.totals
    assert t.rows_add_up and t.rejected == len(expect)
    # broken.parquet's rows cannot be delimited: its bytes are unread, so the run is not balanced
    # (bad.jsonl.gz is a gzip stream cut short: read to its end, like a cut tar)
    assert t.unread_files == 1 and t.unread_bytes == len(b"PAR1 not really") and not t.balanced
    # one of the duplicate captions, the text row, the parquet row, tar sample a, the longer of
    # the near-duplicate texts, the larger of the two pictures
    assert t.kept == 6
    assert t.input_rows == t.kept + t.rejected
    assert sum(t.rejected_by_reason.values()) == t.rejected
