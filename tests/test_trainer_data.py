"""The trainer's data path on a demo-like pipeline output: template and placeholder counts for every
row, label masking, shard verification, Parquet == WebDataset, streams, mixing, packing, resume."""
from __future__ import annotations

import dataclasses
import itertools
import shutil

import pytest
import torch

from keye.chat import count_tokens
from keye.tokenizer import load_tokenizer
from schemas.sample import Sample
from schemas.train import load_train_config
from trainer.data import (Packer, Source, epoch_shards, folder_rows, make_loader, mixed_rows, open_sources,
                          pack_efficiency, parse_data_arg)
from trainer.folders import OutputFolder, ShardMismatch
from trainer.template import IGNORE, TemplateMismatch, encode_sample


@pytest.fixture(scope="module")
def folder(trainer_data):
    return OutputFolder.open(str(trainer_data[0]))


def data_cfg(**kw):
    return dataclasses.replace(load_train_config().data, **kw)


def all_rows(folder, fmt="wds"):
    cfg = data_cfg(format=fmt, shuffle_buffer=0)
    n = sum(s.rows for s in epoch_shards(folder, cfg, 0, "parquet" if fmt == "parquet" else "wds"))
    return list(itertools.islice(folder_rows(folder, cfg, 0, 1), n))


def test_every_row_renders_to_its_stored_token_counts_and_labels_only_assistant_turns(folder):
    tok = load_tokenizer()
    rows = all_rows(folder)
    assert len(rows) == folder.rows > 100
    tasks = set()
    for s in rows:
        enc = encode_sample(s, tok, folder.layout, folder.system_prompt)
        assert len(enc) == s.text_tokens + s.visual_tokens
        assert len(enc.frames) == sum(len(m.members) for m in s.media)
        visual = sum(1 for i in enc.input_ids if i in (151655, 151656))
        assert visual == s.visual_tokens
        labelled = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])
        assistant = [m for m in s.messages if m.role == "assistant"]
        assert labelled.count("<|im_end|>") == len(assistant) and "<|im_start|>" not in labelled
        for m in assistant:
            assert all(p.text in labelled for p in m.content if p.type == "text")
            if m.reasoning:
                assert "<think>" in labelled
        for m in s.messages:
            if m.role != "assistant":
                assert all(p.text not in labelled for p in m.content if p.type == "text" and len(p.text or "") > 12)
        tasks.add(s.task)
    assert {"caption", "vqa", "video", "text", "interleaved", "cold_start"} <= tasks


def test_a_count_mismatch_is_an_error_naming_the_row(folder):
    tok = load_tokenizer()
    s = all_rows(folder)[0]
    s.text_tokens += 1
    with pytest.raises(TemplateMismatch, match=s.id):
        encode_sample(s, tok, folder.layout, folder.system_prompt)


def test_keye_1_5_layout_expands_each_frame_to_its_own_size(folder):
    tok = load_tokenizer()
    s = next(r for r in all_rows(folder) if r.media and r.media[0].kind == "video")
    item = s.media[0]
    n = len(item.members)
    item.frame_types = [i % 2 for i in range(n)]
    item.fast_height, item.fast_width = item.height // 28 // 2 * 28 or 28, item.width // 28 // 2 * 28 or 28
    slow, fast = (item.height // 28) * (item.width // 28), (item.fast_height // 28) * (item.fast_width // 28)
    item.visual_tokens = sum(fast if t else slow for t in item.frame_types)
    s.text_tokens, s.visual_tokens = count_tokens(s.messages, s.media, tok, folder.system_prompt, "keye_1_5")
    enc = encode_sample(s, tok, "keye_1_5", folder.system_prompt)
    assert len(enc) == s.text_tokens + s.visual_tokens
    assert enc.input_ids.count(151675) == n                       # one <|frame|> per frame
    assert enc.input_ids.count(151676) == sum(item.frame_types)   # fast frames wrapped
    assert [f.height for f in enc.frames] == [item.fast_height if t else item.height for t in item.frame_types]


def test_parquet_shards_give_the_same_rows_and_media_as_the_tars(folder):
    wds_rows_, pq_rows = all_rows(folder, "wds"), all_rows(folder, "parquet")
    assert [s.id for s in wds_rows_] == [s.id for s in pq_rows]
    assert all(a.blobs == b.blobs and a.to_row() == b.to_row() for a, b in zip(wds_rows_, pq_rows))


def test_a_changed_or_missing_shard_is_refused(folder, tmp_path):
    bad = tmp_path / "out"
    shutil.copytree(folder.root, bad)
    tar = bad / folder.list("wds")[0].path
    data = bytearray(tar.read_bytes())
    data[700] ^= 1
    tar.write_bytes(bytes(data))
    cfg = data_cfg(shuffle_buffer=0)
    with pytest.raises(ShardMismatch, match=folder.list("wds")[0].path):
        list(itertools.islice(folder_rows(OutputFolder.open(str(bad)), cfg, 0, 1), folder.rows))
    tar.unlink()
    with pytest.raises(ShardMismatch, match="missing"):
        list(itertools.islice(folder_rows(OutputFolder.open(str(bad)), cfg, 0, 1), folder.rows))


def test_streams_split_the_rows_without_overlap(folder):
    cfg = data_cfg(shuffle_buffer=0)
    parts = []
    for part in range(2):
        shards = epoch_shards(folder, cfg, 0, "wds")[part::2]
        parts.append([s.id for s in itertools.islice(folder_rows(folder, cfg, part, 2), sum(x.rows for x in shards))])
    assert not set(parts[0]) & set(parts[1])
    assert len(parts[0]) + len(parts[1]) == folder.rows


def test_folders_mix_by_weight(folder):
    cfg = data_cfg(shuffle_buffer=8)
    picks = [i for i, _ in itertools.islice(mixed_rows([Source(folder, 3.0), Source(folder, 1.0)], cfg, 0, 1), 400)]
    assert 0.68 < picks.count(0) / 400 < 0.82
    assert parse_data_arg("/a/b:0.3") == ("/a/b", 0.3) and parse_data_arg("gs://x/y") == ("gs://x/y", 1.0)


def test_packing_is_efficient_and_keeps_samples_whole(folder):
    rows = all_rows(folder)
    cfg = load_train_config().data
    assert pack_efficiency([s.text_tokens + s.visual_tokens for s in rows], cfg) >= 0.95
    packer = Packer(600, 32)
    packs = list(packer.packs((0, s) for s in rows))
    assert packer.too_long == sum(s.text_tokens + s.visual_tokens > 600 for s in rows) > 0
    assert all(sum(s.text_tokens + s.visual_tokens for _, s in p) <= 600 for p in packs)
    loader = iter(make_loader(open_sources([(folder.root, 1.0)]), cfg, "builtin:qwen3", 0, 1, 1))
    for _ in range(2):
        b = next(loader)
        lens, pos, labels = b["seq_lens"][0], b["position_ids"][0], b["labels"][0]
        assert sum(lens) == cfg.pack_length and b["real_tokens"] >= 0.9 * cfg.pack_length
        starts = [sum(lens[:i]) for i in range(len(lens))]
        assert all(pos[a] == 0 for a in starts) and all(labels[a] == IGNORE for a in starts)
        assert int((pos == 0).sum()) == len(lens)


def test_packs_mix_the_rows_as_they_arrive():
    """Rows of two lengths arriving alternately: every pack holds both, in arrival order (first-fit
    decreasing put each length in packs of its own: homogeneous batches, README "Evidence"), and the
    packs are as full as sorting made them."""
    rows = [(0, Sample(id=f"{i:04d}", source="", source_ref="", task="text", messages=[],
                       text_tokens=(100 if i % 2 else 150))) for i in range(400)]
    packer = Packer(1000, 32)
    packs = list(packer.packs(iter(rows)))
    assert all({s.text_tokens for _, s in p} == {100, 150} for p in packs)
    assert all([s.id for _, s in p] == sorted(s.id for _, s in p) for p in packs)
    assert min(sum(s.text_tokens for _, s in p) for p in packs) >= 950
    assert len({s.id for p in packs for _, s in p}) == sum(len(p) for p in packs)      # each row once


def test_a_stream_resumed_at_pack_n_continues_exactly(folder):
    cfg = data_cfg(pack_length=1024, workers=0)
    src = open_sources([(folder.root, 1.0)])
    full = [b["input_ids"] for b in itertools.islice(make_loader(src, cfg, "builtin:qwen3", 1, 2, 1), 4)]
    resumed = [b["input_ids"] for b in itertools.islice(make_loader(src, cfg, "builtin:qwen3", 1, 2, 1, 2), 2)]
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
    assert not torch.equal(full[0], full[2])


@pytest.mark.slow
def test_a_hugging_face_tokenizer_folder_renders_the_same_ids(folder, tmp_path):
    from keye.tokenizer import HFTokenizer, save_hf_tokenizer

    hf = HFTokenizer(save_hf_tokenizer(str(tmp_path / "tok")))
    tok = load_tokenizer()
    for s in all_rows(folder)[:12]:
        a = encode_sample(s, tok, folder.layout, folder.system_prompt)
        b = encode_sample(s, hf, folder.layout, folder.system_prompt)
        assert (a.input_ids, a.labels) == (b.input_ids, b.labels)


@pytest.mark.slow
def test_a_keye_1_5_output_trains_with_slow_and_fast_frames_at_their_sizes(trainer_data, tmp_path):
    """The pipeline's Keye-VL 1.5 recipe (slow-fast sampling, keye_1_5 layout): every row renders to its
    counts, and packs decode every stored frame at the size its type says."""
    import json
    import os

    from pipelines.curate import build_curate
    from pipelines.launch import run
    from synthetic.corpus import corpus_media_root
    from schemas.config import CONFIG_DIR

    out = tmp_path / "keye15"
    media = f"ingest.media_roots={json.dumps([corpus_media_root(str(trainer_data[1]))])}"
    run("curate", build_curate, ["--config", os.path.join(CONFIG_DIR, "keye15.yaml"), "--input",
                                 str(trainer_data[1] / "manifests"), "--output", str(out), "--progress_s", "0",
                                 "--set", media])
    f = OutputFolder.open(str(out))
    assert f.layout == "keye_1_5"
    tok = load_tokenizer()
    rows = all_rows(f)
    fast = [s for s in rows if any(1 in m.frame_types for m in s.media)]
    assert fast, "the corpus's clips should give fast frames"
    for s in rows:
        assert len(encode_sample(s, tok, f.layout, f.system_prompt)) == s.text_tokens + s.visual_tokens
    cfg = data_cfg(pack_length=4096, shuffle_buffer=0)
    batches = list(itertools.islice(make_loader(open_sources([(str(out), 1.0)]), cfg, "builtin:qwen3", 0, 1, 1),
                                    sum(s.text_tokens + s.visual_tokens for s in rows) // 4096))
    sizes = {tuple(p.shape[1:]) for b in batches for p in b["pixels"]}
    assert {(m.fast_height, m.fast_width) for s in fast for m in s.media if m.fast_height} & sizes
