"""Recaptioning: prompts, frame rates, the HTTP backend against the loopback server (and its
failure modes), the in-process transformers backend, the better caption winning, provenance,
and the stage through Beam.

The loopback server is `captioners.serve` over a tiny Qwen2-VL with random weights (tests/conftest.py):
real HTTP, real batching, real generation; its captions are noise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from captioners.backends import (_retry_after, CaptionRequest, OpenAIChatBackend, TransformersBackend, make_backend,
                                 parse_chat_completion, MalformedResponse)
from captioners.prompts import PROMPT_DIR, load_prompt, released
from captioners.recaption import Candidate, choose, frames_at, jpeg, plan_requests
from captioners.serve import FaultPlan, Server, parse_faults
from pipelines.recaption import Recaption
from pipelines.score import Score
from schemas.config import OpenAIBackendConfig, TransformersBackendConfig
from tests.conftest import free_port, make_cfg
from tests.recaption_util import OracleServer, key
from tests.score_util import image_row, run_stages, scene, video_row

ROUTE_ALL = ("score.rules=[{source: null, task: caption, kind: absolute, value: 1.0, below: recaption},"
             "{source: null, task: video, kind: absolute, value: 1.0, below: recaption}]")
SCORE = ["score.enabled=true", "score.model=builtin:tiny-clip-synth", "score.pretrained=null", ROUTE_ALL]


def http_cfg(url, **kw) -> OpenAIBackendConfig:
    base = dict(base_url=url, model="tiny-vlm", api_key_env=None, concurrency=4, timeout_s=20.0, max_retries=3,
                backoff_base_s=0.01, backoff_max_s=0.05, request_budget=0)
    return OpenAIBackendConfig(**{**base, **kw})


def backend(url, **kw) -> OpenAIChatBackend:
    b = OpenAIChatBackend(http_cfg(url, **kw), max_new_tokens=6, temperature=0.8, captioner_id="test")
    b.setup()
    return b


def requests_for(n, images=1):
    img = jpeg(scene(1)[0], 128)
    return [CaptionRequest(f"r{i}", "caption_image_v1", "Describe the image.", [img] * images, seed=i) for i in range(n)]


def stage_cfg(url, *extra):
    return make_cfg(*SCORE, "recaption.enabled=true", "recaption.backend=openai",
                    f"recaption.openai.base_url={url}", "recaption.openai.model=tiny-vlm",
                    "recaption.openai.timeout_s=20", "recaption.openai.max_retries=4",
                    "recaption.openai.backoff_base_s=0.01", "recaption.openai.backoff_max_s=0.05",
                    "recaption.max_new_tokens=6", "recaption.temperature=0.8", "recaption.batch_rows=4", *extra)


@pytest.fixture(scope="module")
def server(tiny_vlm):
    with Server(tiny_vlm, max_batch=8) as s:
        yield s


# --- prompts and frames -------------------------------------------------------------------------
def test_prompts_are_pinned_and_render():
    pinned = released()
    files = sorted(f for f in os.listdir(PROMPT_DIR) if f.endswith(".txt"))
    assert sorted(pinned) == files, "every prompt file needs a line in prompts/SHA256SUMS (and back)"
    for f in files:   # a released prompt's text never changes under its id: add a _v2 instead
        assert load_prompt(f[:-4]).sha256 == pinned[f], f"{f} changed; give the new text a new id"
    text = load_prompt("caption_video_asr_v1").render(fps="2", num_frames=4, duration_s="2.0", asr="hello there")
    assert "hello there" in text and "4 frames" in text and "{" not in text
    with pytest.raises(KeyError):
        load_prompt("caption_video_v1").render(fps="1")
    assert load_prompt("caption_image_v1").fields == set()


def test_frames_at_each_rate():
    ts = [0.25 * k for k in range(20)]                       # 5 s sampled at 4 fps
    assert frames_at(ts, 2.0, 32) == list(range(0, 20, 2))
    assert frames_at(ts, 1.0, 32) == [0, 4, 8, 12, 16]
    assert frames_at(ts, 0.5, 32) == [0, 8, 16]
    assert frames_at(ts, 2.0, 4) == [0, 6, 12, 18]          # thinned evenly to max_frames
    assert frames_at([0.0, 0.9, 1.4, 3.1], 1.0, 32) == [0, 2, 3]   # first frame at or after each second
    assert frames_at([], 1.0, 8) == []


def test_requests_for_images_and_videos_with_asr():
    cfg = make_cfg().recaption
    img, cap, _ = scene(2)
    p = plan_requests(image_row("c:1", cap, img), cfg)
    assert [(r.prompt_id, r.fps, len(r.images)) for r in p.requests] == [("caption_image_v1", None, 1)]
    frames = [scene(10 + k)[0] for k in range(8)]
    row = video_row("v:1", "a clip", frames, [0.5 * k for k in range(8)], asr="the circle is rolling")
    p = plan_requests(row, cfg)
    assert [(r.prompt_id, r.fps, len(r.images)) for r in p.requests] == [
        ("caption_video_asr_v1", 0.5, 2), ("caption_video_asr_v1", 1.0, 4), ("caption_video_asr_v1", 2.0, 8)]
    assert all("the circle is rolling" in r.prompt for r in p.requests)
    assert p.requests[0].seed != p.requests[1].seed
    row.media[0].asr = None
    assert {r.prompt_id for r in plan_requests(row, cfg).requests} == {"caption_video_v1"}
    qa = video_row("v:2", "Left.", frames, [0.5 * k for k in range(8)], question="Where does it go?")
    assert plan_requests(qa, cfg) is None


def test_requests_for_a_video_kept_as_its_source():
    from tests.media_util import encode_video, index_frame

    src = [index_frame(i) for i in range(20)]
    row = video_row("v:3", "a clip", [src[i] for i in range(0, 20, 4)], [0.4 * k for k in range(5)])
    name = f"{row.id}.0.mp4"                # keep: original: decoded at the stored timestamps
    row.media[0].members, row.media[0].source_member = [name], name
    row.media[0].height, row.media[0].width = src[0].shape[:2]
    row.blobs = {name: encode_video(src, fps=10)}
    p = plan_requests(row, make_cfg().recaption)
    assert [(r.fps, len(r.images)) for r in p.requests] == [(0.5, 1), (1.0, 2), (2.0, 4)]
    row.media[0].frame_timestamps = []      # never sampled by the media stage: nothing to show
    assert plan_requests(row, make_cfg().recaption) is None


# --- the better caption wins ----------------------------------------------------------------------
def test_choose_keeps_the_better_caption_and_records_everything():
    img, right, wrong = scene(3)
    row = image_row("c:2", wrong, img)
    row.scores["clip_score"] = 0.5
    reqs = requests_for(2)
    cands = [Candidate(reqs[0], "noise", 0.1), Candidate(reqs[1], right, 0.9)]
    choose(row, (1, 0), cands, "openai:m", new_text_embedding=np.ones(4, np.float32))
    assert row.messages[1].content[0].text == right and row.scores["clip_recaption"] == 0.9
    assert row.scores["clip_score"] == 0.9          # the row's score describes the row's new text
    assert [(a.text, a.clip_score) for a in row.alternatives] == [(wrong, 0.5), ("noise", 0.1)]
    assert [(c.captioner_id, c.prompt_id, c.target) for c in row.provenance.captioners] == [
        ("openai:m", "caption_image_v1", "messages[1].content[0]"), ("openai:m", "caption_image_v1", "alternatives[1]")]
    assert np.array_equal(row.embeddings["clip_text"], np.ones(4))
    # the original stays when nothing beats it (ties included)
    row = image_row("c:3", right, img)
    row.scores["clip_score"] = 0.9
    choose(row, (1, 0), [Candidate(reqs[0], "noise", 0.9)], "openai:m")
    assert row.messages[1].content[0].text == right and row.alternatives[0].text == "noise"
    assert row.provenance.captioners[0].target == "alternatives[0]"


def test_alternatives_and_provenance_round_trip_through_parquet():
    import pyarrow as pa

    from schemas.sample import SAMPLE_SCHEMA, Sample

    img, right, wrong = scene(4)
    row = image_row("c:4", wrong, img)
    row.scores["clip_score"] = 0.2
    choose(row, (1, 0), [Candidate(requests_for(1)[0], right, 0.8)], "x")
    back = Sample.from_row(pa.Table.from_pylist([row.to_row()], schema=SAMPLE_SCHEMA).to_pylist()[0])
    assert back.alternatives == row.alternatives and back.provenance == row.provenance


# --- the HTTP backend against the loopback server ---------------------------------------------------
def test_serve_cli_speaks_the_openai_protocol(tiny_vlm):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "captioners.serve", "--model", tiny_vlm, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"READY http://127.0.0.1:{port}/v1"), line
        models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10))
        assert [m["id"] for m in models["data"]] == ["tiny-vlm"]
        b = backend(f"http://127.0.0.1:{port}/v1")
        results = b.caption(requests_for(3, images=2))
        assert all(r.ok and r.attempts == 1 for r in results), results
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
                                     data=json.dumps({"model": "tiny-vlm", "max_tokens": 4, "messages": [
                                         {"role": "user", "content": "Say hi."}]}).encode(),
                                     headers={"Content-Type": "application/json"})
        body = json.load(urllib.request.urlopen(req, timeout=20))
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] <= 4
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_retries_500s_malformed_json_empty_text_and_dropped_connections(tiny_vlm):
    with Server(tiny_vlm, fault_sequence="drop,500,malformed,503,empty") as s:
        b = backend(s.base_url, concurrency=1, max_retries=5)
        [r] = b.caption(requests_for(1))
        assert r.ok and r.attempts == 6
        assert b.stats["status_5xx"] == 2 and b.stats["malformed"] == 1 and b.stats["empty"] == 1
        assert b.stats["connection_errors"] == 1 and b.stats["retries"] == 5


def test_gives_up_after_the_retries(tiny_vlm):
    with Server(tiny_vlm, fault="500:1.0") as s:
        b = backend(s.base_url, max_retries=2)
        results = b.caption(requests_for(2))
        assert [(r.ok, r.attempts) for r in results] == [(False, 3), (False, 3)]
        assert results[0].error.startswith("HTTP 500")
        assert s.faults.counts == {"500": 6}
    with Server(tiny_vlm, fault="malformed:1.0") as s:
        [r] = backend(s.base_url, max_retries=1).caption(requests_for(1))
        assert not r.ok and r.attempts == 2 and r.error.startswith("malformed response")


def test_a_hang_past_the_timeout_is_retried(tiny_vlm):
    with Server(tiny_vlm, fault_sequence="hang", hang_s=30) as s:
        b = backend(s.base_url, timeout_s=2.0, concurrency=1)
        t0 = time.monotonic()
        [r] = b.caption(requests_for(1))
        took = time.monotonic() - t0
        assert r.ok and r.attempts == 2 and b.stats["timeouts"] == 1
        assert 2.0 <= took < 25, took


def test_429_backs_off_for_retry_after(tiny_vlm):
    with Server(tiny_vlm, fault_sequence="429,429", retry_after=0.4) as s:
        b = backend(s.base_url, concurrency=1, backoff_max_s=5.0)
        t0 = time.monotonic()
        [r] = b.caption(requests_for(1))
        assert r.ok and r.attempts == 3 and b.stats["status_429"] == 2
        assert time.monotonic() - t0 >= 0.8
    b = backend("http://127.0.0.1:9/v1", backoff_base_s=1.0, backoff_max_s=8.0)
    assert all(0 <= b.backoff_s(3) <= 8.0 for _ in range(50)) and b.backoff_s(0, retry_after=3.0) == 3.0
    assert max(b.backoff_s(2) for _ in range(200)) > 2.0          # full jitter up to base * 2**attempt


class _Drip:
    """A loopback server that answers 200 with a Content-Length, then sends the body a few bytes
    at a time, forever: every read finishes well inside a socket timeout."""

    def __init__(self, every_s: float = 0.2) -> None:
        import socket as _socket
        self.sock = _socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.every_s, self.stop = every_s, threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not self.stop.is_set():
                conn.sendall(b"  ")
                time.sleep(self.every_s)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sock.close()


def test_timeout_bounds_the_whole_request_not_each_read():
    """A server that drips 2 bytes every 0.2 s never trips a per-read timeout; timeout_s=1 must
    still end each attempt after about a second."""
    with _Drip() as s:
        b = backend(s.base_url, timeout_s=1.0, max_retries=1, concurrency=1, backoff_base_s=0.01,
                    backoff_max_s=0.02)
        t0 = time.monotonic()
        [r] = b.caption(requests_for(1))
        took = time.monotonic() - t0
    assert not r.ok and r.attempts == 2 and b.stats["timeouts"] == 2, r
    assert r.error == "timeout after 1 s"
    assert 2.0 <= took < 4.0, took


def test_retry_after_as_seconds_or_http_date():
    now = 1_445_412_480.0                                   # Wed, 21 Oct 2015 07:28:00 GMT
    assert _retry_after("120") == 120.0 and _retry_after(" 0.5 ") == 0.5 and _retry_after("-3") == 0.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert _retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now=now) == 60.0     # RFC 850 form
    assert _retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0          # in the past
    assert _retry_after("soon") is None and _retry_after(None) is None and _retry_after("") is None


def test_client_errors_are_not_retried(server):
    b = backend(server.base_url, model="no-such-model")
    [r] = b.caption(requests_for(1))
    assert not r.ok and r.attempts == 1 and r.error.startswith("HTTP 404 (not retried)")


def test_request_budget_per_worker(server):
    b = backend(server.base_url, request_budget=2, concurrency=1)
    results = b.caption(requests_for(3))
    assert [r.ok for r in results] == [True, True, False] and results[2].budget_exhausted
    assert b.requests_sent == 2


def test_concurrency_lets_the_server_batch(server):
    before = (server.engine.batches, server.engine.batched_requests)
    assert all(r.ok for r in backend(server.base_url, concurrency=8).caption(requests_for(8)))
    batches = server.engine.batches - before[0]
    assert server.engine.batched_requests - before[1] == 8 and batches < 8      # requests shared a generate()
    before = server.engine.batches
    assert all(r.ok for r in backend(server.base_url, concurrency=1).caption(requests_for(3)))
    assert server.engine.batches - before == 3


def test_fault_plan_is_deterministic():
    plan = FaultPlan(["hang"], parse_faults("500:0.3,malformed:0.1"))
    faults = [plan.next() for _ in range(1001)]
    assert faults[0] == "hang" and FaultPlan(["hang"], parse_faults("500:0.3,malformed:0.1")).fault_of(17) == faults[17]
    assert abs(faults.count("500") - 300) <= 3 and abs(faults.count("malformed") - 100) <= 3
    with pytest.raises(ValueError):
        parse_faults("teapot:0.5")


def test_parse_chat_completion():
    ok = {"choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "a "},
                                                                      {"type": "text", "text": "cat"}]}}]}
    assert parse_chat_completion(json.dumps(ok).encode()) == "a cat"
    for bad in (b'{"choices": [', b'{"choices": []}', b'{"error": "x"}', b'{"choices": [{"message": {"content": 3}}]}'):
        with pytest.raises(MalformedResponse):
            parse_chat_completion(bad)


# --- the in-process transformers backend -----------------------------------------------------------
def test_transformers_backend_in_process(tiny_vlm):
    cfg = TransformersBackendConfig(model=tiny_vlm, device="cpu", dtype="float32", trust_remote_code=False,
                                    batch_size=2, max_retries=1)
    b = TransformersBackend(cfg, max_new_tokens=6, temperature=0.8, captioner_id="transformers:tiny")
    results = b.caption(requests_for(3, images=2))
    assert all(r.ok and r.text for r in results) and b.stats["batches"] == 2
    # greedy decoding of this random model writes only newlines: an empty generation, retried, then failed
    greedy = TransformersBackend(cfg, max_new_tokens=6, temperature=0.0, captioner_id="transformers:tiny")
    [r] = greedy.caption(requests_for(1))
    assert not r.ok and r.error == "empty generation" and r.attempts == 2


def test_backend_registry_has_no_unfinished_backends():
    import sys

    from captioners.backends import BACKENDS, LAZY_BACKENDS
    from schemas.config import ConfigError

    assert set(BACKENDS) - set(LAZY_BACKENDS) == {"openai", "transformers"}
    with pytest.raises(ConfigError, match="backend"):
        make_cfg("recaption.backend=vllm")
    assert make_backend(make_cfg().recaption).captioner_id == "openai:Kwai-Keye/Keye-VL-1_5-8B"
    # the trainer's backend is registered only when a recipe names it (tests/test_trainer_generate.py runs it)
    with pytest.raises(ValueError, match="checkpoint"):
        make_backend(make_cfg("recaption.backend=trainer").recaption)
    assert "trainer" in BACKENDS and "trainer.recaption" in sys.modules
    with pytest.raises(ConfigError, match="batch_size"):     # it captions one request at a time: no such knob
        make_cfg("recaption.trainer.batch_size=4")


# --- the stage through Beam ----------------------------------------------------------------------
def stage_rows():
    rows = []
    for i in range(6):
        img, right, wrong = scene(500 + i)
        rows.append(image_row(f"c.jsonl:{i}", wrong if i % 2 else right, img, source="c"))
    frames = [scene(600 + k)[0] for k in range(8)]
    rows.append(video_row("v.jsonl:1", "a red circle moves", frames, [0.25 * k for k in range(8)],
                          asr="look at it go", source="v"))
    qa = image_row("q.jsonl:1", "Two.", scene(700)[0], source="q", task="vqa")
    rows.append(qa)
    return rows


def test_stage_recaptions_through_a_flaky_server(tiny_vlm):
    """500s, hangs past the timeout and malformed JSON on the way: every routed row is recaptioned
    (or, had its retries run out, rejected), the QA row is untouched, and the pipeline finishes."""
    with Server(tiny_vlm, fault="500:0.3,hang:0.1,malformed:0.1", hang_s=30) as s:
        cfg = stage_cfg(s.base_url, "recaption.openai.timeout_s=4", "recaption.openai.max_retries=6")
        kept, rejected = run_stages([("Score", Score(cfg)), ("Recaption", Recaption(cfg))], stage_rows())
    assert not rejected and len(kept) == 8
    assert {"500", "hang", "malformed"} <= set(s.faults.counts)
    by_source = {}
    for row in kept:
        by_source.setdefault(row.source, []).append(row)
    for row in by_source["c"]:
        assert "clip_recaption" in row.scores and len(row.alternatives) == 1
        assert [c.captioner_id for c in row.provenance.captioners] == ["openai:tiny-vlm"]
        assert row.provenance.captioners[0].prompt_id == "caption_image_v1"
        assert row.provenance.captioners[0].fps is None
    [video] = by_source["v"]
    assert sorted(c.fps for c in video.provenance.captioners) == [0.5, 1.0, 2.0]
    assert {c.prompt_id for c in video.provenance.captioners} == {"caption_video_asr_v1"}
    assert len(video.alternatives) == 3        # three noisy captions lost to the original
    [qa] = by_source["q"]
    assert not qa.alternatives and not qa.provenance.captioners
    assert all("clip_caption_units" not in r.embeddings for r in kept)


def test_stage_rejects_rows_only_after_the_retries_are_spent(tiny_vlm):
    with Server(tiny_vlm, fault="500:1.0") as s:
        cfg = stage_cfg(s.base_url, "recaption.openai.max_retries=2")
        kept, rejected = run_stages([("Score", Score(cfg)), ("Recaption", Recaption(cfg))], stage_rows())
    assert sorted(r.source for r in rejected) == ["c"] * 6 + ["v"]
    assert all((r.stage, r.reason) == ("recaption", "recaption_failed") for r in rejected)
    assert "HTTP 500" in rejected[0].detail and "after 3 attempts" in rejected[0].detail
    assert s.faults.counts["500"] == 3 * (6 + 3)       # every request of every routed row, 3 attempts each
    assert [r.source for r in kept] == ["q"]


def test_stage_keeps_rows_it_has_no_budget_for(server):
    cfg = stage_cfg(server.base_url, "recaption.openai.request_budget=2", "recaption.batch_rows=8",
                    "recaption.openai.concurrency=1")
    kept, rejected = run_stages([("Score", Score(cfg)), ("Recaption", Recaption(cfg))], stage_rows())
    assert not rejected and len(kept) == 8
    assert sum(bool(r.alternatives) for r in kept) == 2          # two requests: two rows recaptioned


def test_better_caption_wins_in_the_pipeline():
    """A captioner that writes the right caption (the oracle) replaces the wrong ones; right
    captions it repeats tie with the original, which stays."""
    oracle = OracleServer()
    rows = stage_rows()[:6]
    truth = {}
    for i, row in enumerate(rows):
        img, right, wrong = scene(500 + i)
        oracle.captions[key([jpeg(img, 768)])] = right
        truth[row.id] = (right, wrong, i % 2 == 1)
    try:
        cfg = stage_cfg(oracle.base_url, "recaption.temperature=0")
        kept, rejected = run_stages([("Score", Score(cfg)), ("Recaption", Recaption(cfg))], rows)
    finally:
        oracle.stop()
    assert not rejected and len(oracle.requests) == 6
    for row in kept:
        right, wrong, was_wrong = truth[row.id]
        assert row.messages[1].content[0].text == right
        if was_wrong:                             # the new text's scores replace the old text's
            assert row.scores["clip_recaption"] == row.scores["clip_score"] == row.scores["clip_image_text"]
            assert [a.text for a in row.alternatives] == [wrong]
            assert row.alternatives[0].clip_score < row.scores["clip_score"]
            assert [c.target for c in row.provenance.captioners] == ["messages[1].content[0]"]
        else:                                     # the same text scores the same: the original stays
            assert row.scores["clip_recaption"] == row.scores["clip_score"]
            assert [a.text for a in row.alternatives] == [right]
            assert [c.target for c in row.provenance.captioners] == ["alternatives[0]"]
