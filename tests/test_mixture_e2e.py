"""build_mixture on the demo corpus, end to end, its generator the synthetic reasoner over HTTP:
every kept row is a cold-start sample of one of the five modes and passes the format validator,
the shares meet their targets within one sample, inputs and derived rows both balance, token
counts are exact, video variants have 16 and 32 frames, a rerun in another folder on two worker
processes writes the same bytes, and the export loads with `datasets` in the ms-swift and LLaVA layouts."""
from __future__ import annotations

import hashlib
import json
import os

import pyarrow.parquet as pq
import pytest

from keye.chat import count_tokens
from keye.tokenizer import load_tokenizer
from mixture import mixing
from pipelines.build_mixture import build_mixture
from pipelines.launch import run
from schemas.config import CONFIG_DIR, load_config
from schemas.sample import Sample

pytestmark = pytest.mark.slow
DEMO = os.path.join(CONFIG_DIR, "demo.yaml")
# CLIP scoring is off here (its determinism is tested with curation, tests/test_pipeline_e2e.py): the
# mixture does not read CLIP scores, and two demo runs are the cost of this module.
FAST = ["media.decode.isolation=in_process", "score.enabled=false"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from synthetic.corpus import generate

    root = tmp_path_factory.mktemp("mixture_corpus")
    generate(str(root))
    return root


@pytest.fixture(scope="module")
def reasoner(corpus):
    """The synthetic reasoner (a test double for the generator model) over HTTP on loopback."""
    from mixture.reasoner import server

    with server(str(corpus)) as s:
        yield s


def run_demo(corpus_root, out, reasoner, *beam_args):
    from synthetic.corpus import corpus_media_root

    bench = f"decontaminate.benchmarks=[{{name: synthbench, path: {corpus_root / 'benchmark' / 'bench.jsonl'}}}]"
    media = f"ingest.media_roots={json.dumps([corpus_media_root(str(corpus_root))])}"   # manifests name ../media/...
    argv = ["--config", DEMO, "--input", str(corpus_root / "manifests"), "--output", str(out), "--progress_s", "0",
            "--set", bench, "--set", media, "--set", f"mixture.builders.generator.openai.base_url={reasoner.base_url}",
            "--set", f"mixture.builders.generator.openai.model={reasoner.model_name}", *beam_args]
    for o in FAST:
        argv += ["--set", o]
    return run("build_mixture", build_mixture, argv)


@pytest.fixture(scope="module")
def demo(corpus, reasoner, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixture_out")
    manifest = run_demo(corpus, out, reasoner)
    return manifest, out, pq.read_table(str(out / "parquet")).to_pylist()


def test_every_mode_and_every_row_passes_the_validator(demo):
    from mixture.formats import format_error

    _, _, rows = demo
    auto_suffix = load_config(DEMO).mixture.builders.auto_think_suffix
    for r in rows:
        s = Sample.from_row(r)
        assert r["task"] == "cold_start" and mixing.is_derived(r["id"]) and mixing.category_of(s)
        assert format_error(s, auto_suffix) is None, (r["id"], format_error(s, auto_suffix))
    cats = {mixing.category_of(Sample.from_row(r)) for r in rows}
    assert cats == {"non_thinking", "thinking", "auto_think", "think_with_image", "video_think", "video_no_think"}
    assert {r["mode"] for r in rows} == {"no_think", "think", "auto_think", "agentic_think"}


def test_shares_within_one_sample_and_accounting(demo):
    manifest, out, rows = demo
    t, d = manifest.totals, manifest.derived
    assert t.balanced and d.balanced and d.kept == len(rows)
    assert t.kept == len({mixing.root_id(r["id"]) for r in rows})
    rejected = pq.read_table(str(out / "rejected")).to_pylist()
    assert len(rejected) == t.rejected + d.rejected
    assert sum(1 for r in rejected if mixing.is_derived(r["id"])) == d.rejected
    report = manifest.mixture
    assert report["unit"] == "samples"
    achieved = {}
    for r in rows:
        c = mixing.category_of(Sample.from_row(r))
        achieved[c] = achieved.get(c, 0) + 1
    for c, share in report["categories"].items():
        assert share["achieved_samples"] == achieved.get(c, 0)
        assert abs(share["achieved_samples"] - share["target_samples"]) < 1, (c, share)
    targets = load_config(DEMO).mixture.shares.targets
    present = {c: w for c, w in targets.items() if report["categories"][c]["available_samples"]}
    for c, w in present.items():
        assert report["categories"][c]["target_share"] == pytest.approx(w / sum(present.values()), abs=1e-6)


def test_token_counts_exact_and_video_variants(demo):
    _, _, rows = demo
    cfg = load_config(DEMO)
    tok = load_tokenizer(cfg.tokens.tokenizer)
    videos = 0
    for r in rows:
        s = Sample.from_row(r)
        assert (r["text_tokens"], r["visual_tokens"]) == count_tokens(
            s.messages, s.media, tok, cfg.tokens.system_prompt, cfg.tokens.chat_layout)
        for item in s.media:
            if item.kind == "video":
                videos += 1
                n = int(r["id"].rsplit("@", 1)[1].rstrip("f"))
                assert len(item.frame_timestamps) == len(item.members) == n in (16, 32)
    assert videos >= 2


def test_a_rerun_elsewhere_on_two_processes_writes_the_same_bytes(corpus, reasoner, demo, tmp_path):
    _, first, _ = demo
    run_demo(corpus, tmp_path / "elsewhere" / "again", reasoner,
             "--direct_running_mode=multi_processing", "--direct_num_workers=2")

    def digests(out):
        return {f"{k}/{n}": hashlib.sha256((out / k / n).read_bytes()).hexdigest()
                for k in ("parquet", "wds", "rejected") for n in sorted(os.listdir(out / k))}

    assert digests(first) == digests(tmp_path / "elsewhere" / "again")
    m1 = json.loads((first / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "elsewhere" / "again" / "manifest.json").read_text())
    assert m1["mixture"] == m2["mixture"] and m1["derived"] == m2["derived"]


@pytest.mark.parametrize("fmt", ["swift", "llava"])
def test_export_loads_with_datasets_in_the_documented_layout(demo, fmt, tmp_path):
    datasets = pytest.importorskip("datasets")
    from pipelines.export import main

    _, out, rows = demo
    dest = tmp_path / fmt
    assert main(["--format", fmt, "--dest", str(dest), str(out)]) == 0
    from mixture.export import datasets_features

    ds = datasets.load_dataset("json", data_files=str(dest / "*.jsonl"), split="train",
                               features=datasets_features(fmt))
    summary = json.loads((dest / "export.json").read_text())
    assert len(ds) == summary["rows"] == len(rows) and summary["skipped"] == 0
    by_id = {r["id"]: Sample.from_row(r) for r in rows}
    for rec in ds:
        if fmt == "swift":      # {"messages": [{"role", "content"}], "images": [...], "videos": [...]}
            assert set(rec) == {"messages", "images", "videos"}
            assert [m["role"] for m in rec["messages"]][-2:] == ["user", "assistant"]
            text = "".join(m["content"] for m in rec["messages"])
            images, videos = rec["images"], rec["videos"]
        else:                   # {"id", "image": [...], "video": "...", "conversations": [{"from", "value"}]}
            assert {"id", "conversations"} <= set(rec) and rec["id"] in by_id
            assert [c["from"] for c in rec["conversations"]][-2:] == ["human", "gpt"]
            text = "".join(c["value"] for c in rec["conversations"])
            images, videos = rec.get("image") or [], [rec["video"]] if rec.get("video") else []
        assert text.count("<image>") == len(images) and text.count("<video>") == len(videos)
        for path in images:
            assert (dest / path).is_file() and (dest / path).stat().st_size > 0
        for path in videos:       # a folder of the sampled frames
            frames = sorted(os.listdir(dest / path))
            assert len(frames) in (16, 32) and frames[0] == "000.jpg"
        if "<think>" in text:        # the mode formats pass through unchanged
            assert text.index("<think>") < text.index("</think>") < text.index("<answer>") < text.index("</answer>")
