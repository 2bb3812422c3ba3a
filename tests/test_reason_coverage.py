"""Every reason code, produced by the real pipeline: one planted input row per reason.

The planted inputs go through `curate` on the DirectRunner; each must land in rejected/
with exactly the planned (stage, reason), every other row must be kept, and the manifest
must add up. A new Reason without a planted row here fails `test_every_reason_is_planted`.
"""
import gzip
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.curate import build_curate
from pipelines.launch import run
from schemas.reasons import Reason
from schemas.sample import sample_id

OVERRIDES = ["text.min_chars=3", "text.max_chars=5000", "validate.max_field_chars=20000",
             "validate.max_media_per_row=3", "validate.max_messages=6", "media.max_bytes=5000",
             "tokens.max_total_tokens=300", "ingest.max_row_bytes=60000", "text.min_words_for_repetition=20",
             # CLIP scoring with the bundled tiny model: every grounding box is below 1.0 and dropped,
             # every decodable caption is below 1.0 and routed to a captioner that is not there
             "score.enabled=true", "score.model=builtin:tiny-clip-synth", "score.pretrained=null",
             "score.rules=[{source: null, task: grounding, kind: absolute, value: 1.0, below: drop},"
             "{source: null, task: caption, kind: absolute, value: 1.0, below: recaption}]",
             "recaption.enabled=true", "recaption.openai.max_retries=1", "recaption.openai.timeout_s=5",
             "recaption.openai.backoff_base_s=0.01", "recaption.openai.backoff_max_s=0.02"]


def _words(n, seed):
    import random
    rng = random.Random(seed)
    vocab = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    return " ".join(rng.choice(vocab) + str(rng.randrange(1000)) for _ in range(n))


def _tar(members, cut=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    return data[:cut] if cut else data


def _dead_port() -> int:
    """A loopback port nothing listens on: a captioner that is down."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plant(root):
    """Write the inputs; return {source_ref: (stage, reason)} for the rows that must be rejected."""
    from tests.score_util import encode, scene

    m, media = root / "in", root / "media"
    m.mkdir()
    media.mkdir()
    (media / "shapes.jpg").write_bytes(encode(scene(1, 64, 48)[0], "JPEG"))   # a real picture, < 5000 bytes
    (media / "ok.png").write_bytes(b"\x89PNG fake but fetchable" * 3)
    (media / "dup.png").write_bytes(b"\x89PNG fake but fetchable" * 3)   # same bytes, other name
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
    line({"image": "../media/ok.png", "caption": "  \u200b\x00 "}, "text", Reason.EMPTY_TEXT)
    line({"text": "ab"}, "text", Reason.TEXT_TOO_SHORT)
    line({"text": _words(800, 1)}, "text", Reason.TEXT_TOO_LONG)
    line({"text": "the same words again and again. " * 12}, "text", Reason.REPETITIVE_TEXT)
    line({"image": "../media/nope.png", "caption": "missing"}, "media", Reason.MISSING_MEDIA)
    line({"video": "../media/empty.mp4", "caption": "empty"}, "media", Reason.EMPTY_MEDIA)
    line({"image": "../media/big.jpg", "caption": "too big"}, "media", Reason.MEDIA_TOO_LARGE)
    line({"text": _words(400, 2)}, "tokens", Reason.TOO_MANY_TOKENS)
    line({"messages": [{"role": "user", "content": [{"type": "image", "image": "../media/shapes.jpg"},
                                                    {"type": "text", "text": "Where is the shape?"}]},
                       {"role": "assistant", "content": "<|object_ref_start|>the shape<|object_ref_end|>"
                                                        "<|box_start|>[[100,100,900,900]]<|box_end|>"}]},
         "score", Reason.LOW_CLIP_SCORE)
    line({"image": "../media/shapes.jpg", "caption": "shapes on a background"}, "recaption", Reason.RECAPTION_FAILED)
    (m / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    (m / "broken.parquet").write_bytes(b"PAR1 not really")
    expect["broken.parquet"] = ("ingest", Reason.MALFORMED_PARQUET)
    (m / "cut.tar").write_bytes(_tar([("a.png", b"P" * 700), ("a.txt", b"a tar caption"),
                                      ("b.png", b"Q" * 3000), ("b.txt", b"lost")], cut=4000))
    expect["cut.tar#b"] = ("ingest", Reason.TRUNCATED_ARCHIVE)
    (m / "bad.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    expect["bad.jsonl.gz:rest"] = ("ingest", Reason.UNREADABLE_FILE)
    pq.write_table(pa.table({"text": ["a parquet text row"]}), m / "ok.parquet")
    return expect


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reasons")
    expect = plant(root)
    out = root / "out"
    argv = ["--input", str(root / "in"), "--output", str(out), "--progress_s", "0",
            "--set", f"recaption.openai.base_url=http://127.0.0.1:{_dead_port()}/v1"]
    for o in OVERRIDES:
        argv += ["--set", o]
    manifest = run("curate", build_curate, argv)
    rejected = pq.read_table(str(out / "rejected")).to_pylist()
    return expect, manifest, rejected


def test_every_reason_is_planted(planted_run):
    expect, _, _ = planted_run
    assert {r for _, r in expect.values()} == set(Reason)


def test_each_planted_row_rejected_with_its_reason(planted_run):
    expect, manifest, rejected = planted_run
    got = {r["source_ref"]: (r["stage"], r["reason"]) for r in rejected}
    assert got == {ref: (stage, reason.value) for ref, (stage, reason) in expect.items()}
    assert all(r["detail"] for r in rejected)


def test_manifest_adds_up(planted_run):
    expect, manifest, _ = planted_run
    t = manifest.totals
    assert t.balanced and t.rejected == len(expect)
    assert t.kept == 4   # one of the duplicate captions, the text row, the parquet row, tar sample a
    assert t.input_rows == t.kept + t.rejected
    assert sum(t.rejected_by_reason.values()) == t.rejected
