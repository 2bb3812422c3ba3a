import pytest

from schemas.input import Invalid, RowContext, normalize_row
from schemas.reasons import Reason
from schemas.sample import Sample, sample_id


def ctx(**kw):
    base = dict(source="src", source_ref="f.jsonl:1", base_dir="/data/manifests", max_field_chars=1000,
                max_media_per_row=4, max_messages=8)
    base.update(kw)
    return RowContext(**base)


def ok(payload, **kw) -> Sample:
    out = normalize_row(payload, ctx(**kw))
    assert isinstance(out, Sample), out
    return out


def bad(payload, **kw) -> Invalid:
    out = normalize_row(payload, ctx(**kw))
    assert isinstance(out, Invalid), out
    return out


def test_own_layout_messages_and_media_resolution():
    s = ok({"id": 7, "messages": [
        {"role": "user", "content": [{"type": "image", "image": "../img/a.png"},
                                     {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": "Red.", "reasoning": "The circle is red."}]})
    assert s.id == sample_id("src", "f.jsonl:1") and s.source_id == "7"
    assert s.media[0].uri == "/data/img/a.png" and s.media[0].kind == "image"
    assert [p.type for p in s.messages[0].content] == ["image", "text"]
    assert s.messages[0].content[0].media_index == 0
    assert s.messages[1].reasoning == "The circle is red."
    assert s.task == "cold_start"  # a reasoning trace marks cold-start material


def test_flat_layouts_and_task_inference():
    assert ok({"image": "a.jpg", "caption": "a cat"}).task == "caption"
    assert ok({"video": "v.mp4", "caption": "a dog runs"}).task == "video"
    assert ok({"image": "a.jpg", "question": "How many?", "answer": "3"}).task == "vqa"
    assert ok({"text": "plain text"}).task == "text"
    box = "<|box_start|>[[1,2,3,4]]<|box_end|>"
    assert ok({"image": "a.jpg", "question": "Where?", "answer": box}).task == "grounding"
    assert ok({"image": "a.jpg", "caption": "x", "task": "ocr"}).task == "ocr"
    assert ok({"text": "x", "mode": "think"}).task == "cold_start"
    inter = ok({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Page one"}, {"type": "image", "image": "p1.png"},
        {"type": "text", "text": "Page two"}, {"type": "image", "image": "p2.png"}]},
        {"role": "assistant", "content": "Two pages."}]})
    assert inter.task == "interleaved"


def test_caption_prompt_is_optional():
    s = ok({"image": "a.jpg", "caption": "a cat"}, default_caption_prompt="Describe the image.")
    assert [p.text for p in s.messages[0].content if p.type == "text"] == ["Describe the image."]


def test_llava_markers_place_media_in_order():
    s = ok({"id": "x1", "images": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "<image>\nCompare with <image>. Which is larger?"},
        {"from": "gpt", "value": "The first."}]})
    parts = s.messages[0].content
    assert [p.type for p in parts] == ["image", "text", "image", "text"]
    assert parts[1].text == "Compare with " and parts[3].text == ". Which is larger?"
    assert [m.uri for m in s.media] == ["/data/manifests/a.jpg", "/data/manifests/b.jpg"]


def test_llava_without_markers_puts_media_first():
    s = ok({"image": "a.jpg", "conversations": [{"from": "human", "value": "What is it?"},
                                                {"from": "gpt", "value": "A cat."}]})
    assert [p.type for p in s.messages[0].content] == ["image", "text"]


def test_remote_schemes_are_kept_and_http_is_rejected():
    assert ok({"image": "gs://bucket/a.jpg", "caption": "x"}).media[0].uri == "gs://bucket/a.jpg"
    assert ok({"image": "a.jpg", "caption": "x"}, base_dir="s3://b/m").media[0].uri == "s3://b/m/a.jpg"
    assert bad({"image": "http://example.com/a.jpg", "caption": "x"}).reason == Reason.UNSUPPORTED_URI


@pytest.mark.parametrize("payload, reason", [
    ([1, 2], Reason.NOT_AN_OBJECT),
    ("a string", Reason.NOT_AN_OBJECT),
    ({"messages": 5}, Reason.WRONG_TYPE),
    ({"messages": [{"role": "user", "content": 3}]}, Reason.WRONG_TYPE),
    ({"image": "a.jpg", "caption": ["a", "list"]}, Reason.WRONG_TYPE),
    ({"image": 5, "caption": "x"}, Reason.WRONG_TYPE),
    ({"id": {"nested": 1}, "text": "x"}, Reason.WRONG_TYPE),
    ({"messages": [{"role": "robot", "content": "hi"}]}, Reason.UNKNOWN_ROLE),
    ({"conversations": [{"from": "alien", "value": "hi"}]}, Reason.UNKNOWN_ROLE),
    ({"url": "only metadata"}, Reason.MISSING_FIELD),
    ({"messages": []}, Reason.MISSING_FIELD),
    ({"text": "x", "task": "poetry"}, Reason.UNKNOWN_TASK),
    ({"text": "x", "mode": "dream"}, Reason.UNKNOWN_MODE),
    ({"text": "y" * 1001}, Reason.FIELD_TOO_LARGE),
    ({"image": "a.jpg", "conversations": [{"from": "human", "value": "<image> and <image>"},
                                          {"from": "gpt", "value": "x"}]}, Reason.MEDIA_MARKER_MISMATCH),
    ({"image": "a.jpg", "conversations": [{"from": "gpt", "value": "no human turn"}]},
     Reason.MEDIA_MARKER_MISMATCH),
    ({"images": ["a.jpg"] * 5, "caption": "x"}, Reason.TOO_MANY_MEDIA),
    ({"messages": [{"role": "user", "content": "x"}] * 9}, Reason.TOO_MANY_MESSAGES),
    ({"image": "data:image/png;base64,AAAA", "caption": "x"}, Reason.UNSUPPORTED_URI),
])
def test_validation_reasons(payload, reason):
    out = bad(payload)
    assert out.reason == reason and out.detail


def test_video_asr_transcripts():
    s = ok({"video": "v.mp4", "caption": "a dog barks", "asr": "woof woof"})
    assert s.media[0].asr == "woof woof" and s.task == "video"
    s = ok({"messages": [{"role": "user", "content": [{"type": "video", "video": "v.mp4", "asr": "hello"}]},
                         {"role": "assistant", "content": "a greeting"}]})
    assert s.media[0].asr == "hello"
    s = ok({"videos": ["a.mp4", "b.mp4"], "caption": "two clips", "asr": ["first", None]})
    assert [m.asr for m in s.media] == ["first", None]
    assert bad({"videos": ["a.mp4", "b.mp4"], "caption": "x", "asr": "one for two"}).reason == Reason.WRONG_TYPE
    assert bad({"video": "a.mp4", "caption": "x", "asr": 5}).reason == Reason.WRONG_TYPE
    assert ok({"image": "a.png", "caption": "x"}).media[0].asr is None


@pytest.mark.parametrize("value", [True, False, 1.5, float("nan"), [1], {"a": 1}])
def test_id_must_be_a_string_or_an_integer_and_bool_is_neither(value):
    """Regression: `{"id": true}` passed the integer check and became id "True"."""
    assert bad({"id": value, "text": "t"}).reason == Reason.WRONG_TYPE
    assert ok({"id": 10**100, "text": "t"}).source_id == str(10**100)


@pytest.mark.parametrize("uri, location", [
    ("a/../../img/x.png", "/data/img/x.png"),
    ("/data/manifests/../../etc/passwd", "/etc/passwd"),
    ("file:///data/media/a%20b.png", "/data/media/a b.png"),
    ("file://localhost/data/a.png", "/data/a.png"),
    ("gs://bucket/m/../../x.png", "gs://bucket/x.png"),
    ("gs://bucket/../../other/x.png", "gs://bucket/other/x.png"),
])
def test_locations_are_normalised(uri, location):
    assert ok({"image": uri, "caption": "c"}).media[0].location == location


@pytest.mark.parametrize("uri", ["file://otherhost/etc/passwd", "a\x00.png", "ftp://h/a.png"])
def test_unreadable_uris_are_rejected(uri):
    assert bad({"image": uri, "caption": "c"}).reason == Reason.UNSUPPORTED_URI


def test_uris_are_stored_relative_to_the_input_root():
    """The output must not depend on where the corpus sits (the demo's shards differed by output folder)."""
    s = ok({"images": ["a.jpg", "../media/b.jpg", "gs://bucket/c.jpg"], "caption": "c"},
           base_dir="/corpus/manifests/sub", input_root="/corpus/manifests")
    assert [m.uri for m in s.media] == ["sub/a.jpg", "media/b.jpg", "gs://bucket/c.jpg"]
    assert [m.location for m in s.media] == ["/corpus/manifests/sub/a.jpg", "/corpus/manifests/media/b.jpg",
                                             "gs://bucket/c.jpg"]
    s = ok({"image": "../media/b.jpg", "caption": "c"}, base_dir="/corpus/manifests", input_root="/corpus/manifests")
    assert s.media[0].uri == "../media/b.jpg"
    r = ok({"image": "x/a.jpg", "caption": "c"}, base_dir="gs://b/in", input_root="gs://b/in")
    assert r.media[0].uri == "x/a.jpg" and r.media[0].location == "gs://b/in/x/a.jpg"
    assert "location" not in s.to_row()["media"][0]
