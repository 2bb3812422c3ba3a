"""The curation pipeline on the demo corpus, end to end: layout, accounting against the corpus's
ground truth, determinism, reading the output back, and the same pipeline on other runners.
(`build_mixture` runs curation and then the mixture: tests/test_mixture_e2e.py.)

One corpus is generated per test session; each runner writes its own output folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from pipelines.curate import build_curate
from pipelines.launch import run
from schemas.config import CONFIG_DIR
from schemas.manifest import Manifest
from schemas.sample import SAMPLE_SCHEMA, Sample
from tests.conftest import free_port

pytestmark = pytest.mark.slow
DEMO = os.path.join(CONFIG_DIR, "demo.yaml")
# What the stages built so far detect; rows whose planted defect needs a later stage are kept.
DETECTED_BY = {"ingest", "validate", "text", "media_fetch", "exact_dedupe", "decode", "near_dedupe",
               "semantic_dedupe", "decontaminate"}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from synthetic.corpus import generate

    root = tmp_path_factory.mktemp("corpus")
    generate(str(root))
    truth = [json.loads(line) for line in open(root / "truth.jsonl")]
    return root, truth


def run_demo(corpus_root, out, *beam_args):
    from synthetic.corpus import corpus_media_root

    bench = f"decontaminate.benchmarks=[{{name: synthbench, path: {corpus_root / 'benchmark' / 'bench.jsonl'}}}]"
    media = f"ingest.media_roots={json.dumps([corpus_media_root(str(corpus_root))])}"   # manifests name ../media/...
    return run("curate", build_curate, ["--config", DEMO, "--input", str(corpus_root / "manifests"),
                                        "--output", str(out), "--progress_s", "0", "--set", bench,
                                        "--set", media, *beam_args])


@pytest.fixture(scope="session")
def demo(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    return run_demo(corpus[0], out), out


def shard_digests(out) -> dict[str, str]:
    digests = {}
    for kind in ("parquet", "wds", "rejected", "embeddings"):
        for name in sorted(os.listdir(out / kind)):
            digests[f"{kind}/{name}"] = hashlib.sha256((out / kind / name).read_bytes()).hexdigest()
    return digests


def expected_outcome(row) -> tuple | None:
    """The (stage, reason) the enabled stages must give the row: truth's `expect` holds what the
    foundation stages detect, `future` what a later stage detects; None: kept."""
    for e in (row.get("expect"), row.get("future")):
        if e and e["detected_by"] in DETECTED_BY:
            return (e["stage"], e["reason"])
    return None


def text_near_pairs(truth):
    """{copy key, original key} for each planted text near-duplicate: which of the two a
    pipeline keeps is its quality rule's choice (highest text_chars, then smallest id), not
    the corpus's notion of which came first."""
    by_ref = {(r["source"], r["source_ref"]): r for r in truth}
    return [(by_ref[(r["source"], r["near_dup_of"])], r) for r in truth if r.get("near_dup_kind") == "text"]


def test_layout_and_manifest(demo):
    manifest, out = demo
    assert sorted(os.listdir(out)) == ["embeddings", "manifest.json", "parquet", "rejected", "report.html", "shards.parquet",
                                      "wds"]
    on_disk = Manifest.load(str(out))
    assert on_disk.totals.balanced
    t = on_disk.totals
    assert t.input_rows == t.kept + t.rejected == t.kept + sum(t.rejected_by_reason.values())
    assert len(on_disk.shards["parquet"]) > 1, "demo recipe should produce several shards"
    for s in (on_disk.shards["parquet"] + on_disk.shards["wds"] + on_disk.shards["rejected"]
              + on_disk.shards["embeddings"]):
        data = (out / s.path).read_bytes()
        assert len(data) == s.bytes and hashlib.sha256(data).hexdigest() == s.sha256
    assert sum(s.rows for s in on_disk.shards["parquet"]) == t.kept
    assert [s.rows for s in on_disk.shards["parquet"]] == [s.rows for s in on_disk.shards["wds"]]
    assert t.text_tokens > 0
    assert on_disk.counters["keye:ingest/rows"] == t.input_rows   # Beam counters are saved with the run
    assert on_disk.run["engine"] == "FnApiRunner"
    assert not [f for kind in ("parquet", "wds", "rejected", "embeddings") for f in os.listdir(out / kind)
                if f.startswith(".")]


def test_every_row_matches_ground_truth(corpus, demo):
    _, truth = corpus
    _, out = demo
    kept = {(r["source"], r["source_ref"]) for r in pq.read_table(str(out / "parquet"),
                                                                   columns=["source", "source_ref"]).to_pylist()}
    rejected = {(r["source"], r["source_ref"]): (r["stage"], r["reason"])
                for r in pq.read_table(str(out / "rejected")).to_pylist()}
    assert len(kept) + len(rejected) == len(truth), "every input row is kept or rejected exactly once"
    pairs = text_near_pairs(truth)
    assert len(pairs) == 3
    rows = {(r["source"], r["source_ref"]): r for r in pq.read_table(str(out / "rejected")).to_pylist()}
    kept_rows = {(r["source"], r["source_ref"]): r for r in pq.read_table(str(out / "parquet")).to_pylist()}
    for original, copy in pairs:
        keys = [(r["source"], r["source_ref"]) for r in (original, copy)]
        gone = [k for k in keys if k in rows]
        assert len(gone) == 1 and rows[gone[0]]["reason"] == "near_duplicate", (keys, gone)
        stay = next(k for k in keys if k in kept_rows)
        assert rows[gone[0]]["dup_of"] == kept_rows[stay]["id"]
        gone_row = json.loads(rows[gone[0]]["payload"])             # the rejected row as it was
        assert (-kept_rows[stay]["scores"]["text_chars"], kept_rows[stay]["id"]) < \
            (-gone_row["scores"]["text_chars"], gone_row["id"])     # the quality rule picked the kept one
    paired = {(r["source"], r["source_ref"]) for pair in pairs for r in pair}
    mismatches = []
    for row in truth:
        key = (row["source"], row["source_ref"])
        if key in paired:
            continue
        want = expected_outcome(row)
        got = rejected.get(key)
        if want != got or (want is None and key not in kept):
            mismatches.append((key, want, got))
    assert not mismatches, mismatches[:20]


def test_rejected_rows_explain_themselves(demo):
    _, out = demo
    rows = pq.read_table(str(out / "rejected")).to_pylist()
    assert rows and all(r["stage"] and r["reason"] and r["detail"] for r in rows)
    dups = [r for r in rows if r["reason"] == "exact_duplicate"]
    assert dups and all(r["dup_of"] for r in dups)
    big = [r for r in rows if r["reason"] == "row_too_large"]
    assert big and all(r["payload"] is None and r["payload_bytes"] > 10_000_000 for r in big)


def test_read_back_with_pyarrow_webdataset_and_datasets(demo):
    import webdataset as wds

    _, out = demo
    table = pq.read_table(str(out / "parquet"))
    assert table.schema.equals(SAMPLE_SCHEMA)
    by_id = {r["id"]: r for r in table.to_pylist()}
    seen = 0
    for tar in sorted(os.listdir(out / "wds")):
        for s in wds.WebDataset(str(out / "wds" / tar), shardshuffle=False):
            row = json.loads(s["json"])
            assert row == json.loads(json.dumps(by_id[s["__key__"]]))   # KEY.json is the Parquet row
            sample = Sample.from_row(row)
            for item in sample.media:
                for member in item.members:
                    assert member.startswith(s["__key__"] + ".") and s[member[len(s["__key__"]) + 1:]]
            seen += 1
    assert seen == len(by_id)
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(out / "parquet" / "*.parquet"), split="train")
    assert len(ds) == len(by_id) and set(ds.column_names) == set(SAMPLE_SCHEMA.names)


def test_determinism_two_runs_identical_bytes(corpus, demo, tmp_path):
    _, first = demo
    run_demo(corpus[0], tmp_path / "again")
    assert shard_digests(first) == shard_digests(tmp_path / "again")


def test_multi_processing_mode(corpus, demo, tmp_path):
    _, first = demo
    m = run_demo(corpus[0], tmp_path / "mp", "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert m.totals.balanced
    assert shard_digests(first) == shard_digests(tmp_path / "mp")


def test_portable_runner_against_local_job_service(corpus, demo, tmp_path):
    """The Job API that Flink's and Spark's job servers speak, served by Beam's own local job service."""
    _, first = demo
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        m = run_demo(corpus[0], tmp_path / "portable", "--runner=PortableRunner",
                     f"--job_endpoint=localhost:{port}", "--environment_type=LOOPBACK")
    finally:
        server.terminate()
        server.wait(timeout=30)
    # Verified on the files, not on exit codes (see env.md's note on portable runs).
    assert Manifest.from_json((tmp_path / "portable" / "manifest.json").read_text()).totals.balanced
    assert m.totals.balanced and shard_digests(first) == shard_digests(tmp_path / "portable")


def test_clip_scores_and_embeddings_sidecar(corpus, demo):
    """Every kept row with decodable pictures has CLIP scores, and its vectors are in the sidecar;
    the lowest-scoring captions (routed to recaptioning) are mostly the corpus's wrong ones."""
    import numpy as np

    _, truth = corpus
    _, out = demo
    rows = pq.read_table(str(out / "parquet")).to_pylist()
    vectors = pq.read_table(str(out / "embeddings")).to_pylist()
    by_id = {}
    for v in vectors:
        by_id.setdefault(v["id"], []).append(v)
        assert abs(np.linalg.norm(v["vector"]) - 1) < 1e-4
    scored = {r["id"] for r in rows if any(r["scores"][k] is not None for k in
                                           ("clip_image_text", "clip_video_mean", "clip_interleaved_min"))}
    assert any(r["scores"]["clip_video_mean"] is not None for r in rows), "decoded videos are scored"
    assert scored and set(by_id) == scored
    for r in rows:
        if r["id"] in scored:
            kinds = sorted((v["kind"], v["item"]) for v in by_id[r["id"]])
            assert kinds == sorted([("clip_image", i) for i in range(len(r["media"]))] + [("clip_text", None)])
    captions = [r for r in rows if r["task"] == "caption"]
    assert captions and all(r["scores"]["clip_score"] is not None and r["scores"]["clip_threshold"] is not None
                            for r in captions)
    correct = {t["id"]: t["caption_correct"] for t in truth if t["kind"] == "caption_image"}
    routed = [r["id"] for r in captions if r["scores"]["clip_score"] < r["scores"]["clip_threshold"]]
    wrong = {i for i, ok in correct.items() if ok is False}
    kept_wrong = wrong & {r["id"] for r in captions}
    assert len(set(routed) & kept_wrong) >= 0.7 * len(kept_wrong), (len(routed), len(kept_wrong))


def test_demo_with_recaptioning_through_a_flaky_server(corpus, tiny_vlm, tmp_path):
    """The demo recipe with recaptioning on, against `captioners.serve` answering 500s, hanging past
    the client's timeout and sending malformed JSON: the run finishes balanced, and every caption
    routed to recaptioning is either recaptioned (alternatives + provenance) or rejected."""
    from captioners.serve import Server

    server = Server(tiny_vlm, fault="500:0.3,hang:0.1,malformed:0.1", hang_s=30).start()
    try:
        m = run_demo(corpus[0], tmp_path / "recaption", "--set", "recaption.enabled=true",
                     "--set", f"recaption.openai.base_url={server.base_url}", "--set", "recaption.openai.model=tiny-vlm",
                     "--set", "recaption.openai.timeout_s=4", "--set", "recaption.openai.max_retries=5",
                     "--set", "recaption.openai.backoff_base_s=0.01", "--set", "recaption.max_new_tokens=8",
                     "--set", "recaption.temperature=0.8")
    finally:
        server.stop()
    assert m.totals.balanced and {"500", "hang", "malformed"} <= set(server.faults.counts)
    rows = pq.read_table(str(tmp_path / "recaption" / "parquet")).to_pylist()
    rejected = pq.read_table(str(tmp_path / "recaption" / "rejected")).to_pylist()
    # routed rows carry clip_recaption; a winning recaption rewrote clip_score, so the score the router
    # compared is the source caption's: the alternative no provenance record names
    routed = [r for r in rows if r["task"] in ("caption", "video") and r["scores"]["clip_recaption"] is not None]
    for r in routed:
        named = {c["target"] for c in r["provenance"]["captioners"]}
        original = [a["clip_score"] for k, a in enumerate(r["alternatives"]) if f"alternatives[{k}]" not in named]
        before = original[0] if "messages[1].content[0]" in named else r["scores"]["clip_score"]
        assert before < r["scores"]["clip_threshold"], r["id"]
    assert any(r["task"] == "video" for r in routed), "decoded video captions are routed too"
    failed = [r for r in rejected if r["reason"] == "recaption_failed"]
    assert routed and len(routed) + len(failed) >= 10
    truth = {t["id"]: t for t in corpus[1]}
    for r in routed:
        assert r["alternatives"] and r["scores"]["clip_recaption"] is not None
        records = r["provenance"]["captioners"]
        prompt = "caption_video_v1" if r["task"] == "video" else "caption_image_v1"
        assert all(c["captioner_id"] == "openai:tiny-vlm" and c["prompt_id"] == prompt for c in records)
        if r["task"] == "video":
            assert all(c["fps"] is not None for c in records)   # video recaptions record their frame rate
        targets = [c["target"] for c in records]
        alternatives = [f"alternatives[{k}]" for k in range(len(r["alternatives"]))]
        if "messages[1].content[0]" in targets:                             # a new caption won: it is the text
            assert targets.count("messages[1].content[0]") == 1
            assert set(targets) - {"messages[1].content[0]"} <= set(alternatives)   # other fps' captions
            assert r["scores"]["clip_score"] == r["scores"]["clip_recaption"]       # and the row's score is its own
            assert r["scores"]["clip_score"] >= max(a["clip_score"] for a in r["alternatives"])
            if r["task"] == "caption":   # the tiny CLIP knows pictures, not motion: judged on images only
                assert truth[r["id"]]["caption_correct"] is False, "noise never beats a right caption"
        else:                                                                # the original stayed
            assert targets == alternatives
    assert not [r for r in rows if r["alternatives"] and r not in routed]
