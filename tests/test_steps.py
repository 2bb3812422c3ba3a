"""The media-fetch and exact-dedupe pieces, called directly (no Beam)."""
import hashlib

from filters.exact import content_key, pick_representative
from ingest.readers import RawRow
from ingest.validate import ValidateRows
from media.fetch import MediaFetch, member_name
from schemas.config import load_config
from schemas.input import normalize_row
from schemas.rejected import Rejected
from schemas.sample import MediaItem, Sample
from tests.conftest import row_context as ctx


def test_fetch_reads_hashes_and_names_members(tmp_path):
    (tmp_path / "a.png").write_bytes(b"PNG" * 10)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "big.jpg").write_bytes(b"J" * 100)
    step = MediaFetch(load_config(None, ["media.max_bytes=50"]))
    s = step(normalize_row({"image": "a.png", "caption": "x"}, ctx(str(tmp_path))))
    assert isinstance(s, Sample)
    assert s.media[0].sha256 == hashlib.sha256(b"PNG" * 10).hexdigest() and s.media[0].num_bytes == 30
    assert s.media[0].members == [f"{s.id}.0.png"] and s.blobs[f"{s.id}.0.png"] == b"PNG" * 10
    for name, reason in [("missing.png", "missing_media"), ("empty.mp4", "empty_media"),
                         ("big.jpg", "media_too_large")]:
        key = "video" if name.endswith("mp4") else "image"
        out = step(normalize_row({key: name, "caption": "x"}, ctx(str(tmp_path))))
        assert isinstance(out, Rejected) and out.reason == reason and out.stage == "media"


def test_member_name_extensions():
    assert member_name("k", 0, MediaItem("image", "/a/b.JPEG")) == "k.0.jpeg"
    assert member_name("k", 2, MediaItem("video", "/a/noext")) == "k.2.mp4"
    assert member_name("k", 1, MediaItem("image", "/x.tar#key.0.webp")) == "k.1.webp"


def test_validate_attaches_inline_media_and_rejects_ingest_errors():
    step = ValidateRows(load_config())
    raw = RawRow(source="s", source_ref="x.tar#k", base_dir="/d", payload={"image": "/d/x.tar#k.jpg", "caption": "c"},
                 inline={"/d/x.tar#k.jpg": b"JPEG"})
    s = step(raw)
    assert s.blobs == {f"{s.id}.0.jpg": b"JPEG"} and s.media[0].members == [f"{s.id}.0.jpg"]
    bad = step(RawRow(source="s", source_ref="f:3", base_dir="/d", error=("malformed_json", "oops"),
                      raw=b"{x", raw_size=2))
    assert bad.stage == "ingest" and bad.reason == "malformed_json" and bad.payload == b"{x"
    big = step(RawRow(source="s", source_ref="f:4", base_dir="/d", error=("row_too_large", "big"),
                      raw=None, raw_size=10_000_000))
    assert big.payload is None and big.payload_bytes == 10_000_000


def test_content_key_ignores_identity_but_not_content():
    a = normalize_row({"image": "a.png", "caption": "same"}, ctx(source_ref="r:1"))
    b = normalize_row({"image": "other/name.png", "caption": "same"}, ctx(source_ref="r:2"))
    for s in (a, b):
        s.media[0].sha256 = "ab" * 32
    assert content_key(a) == content_key(b) and a.id != b.id
    b.media[0].sha256 = "cd" * 32
    assert content_key(a) != content_key(b)
    c = normalize_row({"text": "same"}, ctx())
    d = normalize_row({"text": "Same"}, ctx())
    assert content_key(c) != content_key(d)
    assert pick_representative(["b", "a", "c"]) == "a"


def test_rejected_payload_travels_whole_and_the_writer_caps_it():
    """One place applies ingest.max_payload_bytes: Rejected.capped, in the rejected writer."""
    from schemas.rejected import reject
    big = reject("text", "empty_text", "s", "f:1", payload=b"x" * 1000)
    assert big.payload == b"x" * 1000 and big.payload_bytes == 1000
    capped = big.capped(999)
    assert capped.payload is None and capped.payload_bytes == 1000 and big.payload is not None
    assert big.capped(1000) is big and reject("text", "empty_text", "s", "f:1").capped(0).payload is None


def test_stage_enum_follows_pipeline_order():
    """Stage claims pipeline order: curation_stages (every stage on) must list them in that order."""
    from pipelines.curate import curation_stages
    from schemas.reasons import Stage
    cfg = load_config(None, ["score.enabled=true", "recaption.enabled=true", "dedupe.semantic.enabled=true",
                             "decontaminate.enabled=true", "decontaminate.benchmarks=[{name: b, path: /b.jsonl}]",
                             "dedupe.near.enabled=true"])
    labels = [label for label, _ in curation_stages(cfg, blob_root="/tmp/blobs")]
    by_label = {"Validate": Stage.VALIDATE, "Text": Stage.TEXT, "Media": Stage.MEDIA, "ExactDedupe": Stage.EXACT_DEDUPE,
                "NearDedupe": Stage.NEAR_DEDUPE, "Score": Stage.SCORE, "SemanticDedupe": Stage.SEMANTIC_DEDUPE,
                "Decontaminate": Stage.DECONTAMINATE, "Recaption": Stage.RECAPTION, "Tokens": Stage.TOKENS,
                "Blobs": Stage.BLOBS}
    order = list(Stage)
    assert [order.index(by_label[lbl]) for lbl in labels] == sorted(order.index(by_label[lbl]) for lbl in labels)
    assert len(labels) == len(by_label)
