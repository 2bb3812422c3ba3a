import os
import re

import pytest

from schemas.config import CONFIG_DIR, ConfigError, InputConfig, load_config


def test_base_and_demo_load():
    base = load_config()
    demo = load_config(os.path.join(CONFIG_DIR, "demo.yaml"))
    assert base.name == "base" and demo.name == "demo"
    assert demo.output.shard_max_rows == 64
    assert demo.text == base.text  # extends: untouched sections come from base


def test_override_sets_typed_value():
    cfg = load_config(None, ["text.min_chars=7", "output.write_wds=false", "ingest.media_root=/data"])
    assert cfg.text.min_chars == 7 and cfg.output.write_wds is False and cfg.ingest.media_root == "/data"


@pytest.mark.parametrize("override, message", [
    ("text.min_charz=3", "unknown key 'text.min_charz' (did you mean 'min_chars'?)"),
    ("text.min_chars=abc", "text.min_chars: expected an integer"),
    ("text.min_chars=1.5", "text.min_chars: expected an integer"),
    ("output.write_wds=1", "output.write_wds: expected true or false"),
    ("text.unicode_form=NFD", "must be one of"),
    ("text.max_dup_ngram_ratio=high", "expected a number"),
    ("nosuchsection.x=1", "is not a section"),
])
def test_bad_overrides_fail_before_work(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_missing_key_and_unknown_section(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(f"extends: {os.path.join(CONFIG_DIR, 'base.yaml')}\nbogus: {{a: 1}}\n")
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load_config(str(p))
    p.write_text("name: x\n")
    with pytest.raises(ConfigError, match="missing key"):
        load_config(str(p))


def test_extends_cycle_and_bad_yaml(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\n")
    b.write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(a))
    a.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(a))


def test_hash_tracks_thresholds_not_inputs():
    cfg = load_config()
    assert cfg.hash() == load_config().hash()
    assert cfg.hash() != load_config(None, ["text.min_chars=2"]).hash()
    moved = cfg.with_inputs([InputConfig(path="/elsewhere", source=None, format="auto")])
    assert moved.hash() == cfg.hash()
    # where data lives is no rule either: media roots and benchmark paths (the demo's corpus sits in its output folder)
    bench = "decontaminate.benchmarks=[{name: b, path: %s}]"
    a = load_config(None, ["ingest.media_roots=[/a/media]", "ingest.media_root=/a", bench % "/a/b.jsonl"])
    b = load_config(None, ["ingest.media_roots=[/b/media]", bench % "/b/b.jsonl"])
    assert a.hash() == b.hash() != load_config(None, [bench % "/a/b.jsonl", "ingest.max_json_depth=8"]).hash()
    assert a.hash() != load_config(None, ["decontaminate.benchmarks=[{name: other, path: /a/b.jsonl}]"]).hash()


@pytest.mark.parametrize("override, message", [
    ("dedupe.near.quality_score=text_charz", "not a registered score (did you mean 'text_chars'?)"),
    ("dedupe.near.threshold=0", "dedupe.near.threshold: must be in (0.0, 1.0]"),
    ("dedupe.near.tasks=[poetry]", "dedupe.near.tasks: unknown tasks ['poetry']"),
    ("dedupe.near.shingle=sentence", "must be one of ['word', 'char']"),
    ("dedupe.near.max_bucket_size=1", "max_bucket_size: must be at least 2"),
    ("dedupe.semantic.embedding=dino", "must be one of ['perceptual', 'clip_image']"),
    ("dedupe.semantic.threshold=1.5", "dedupe.semantic.threshold: must be in [-1.0, 1.0]"),
    ("dedupe.semantic.max_spill=-1", "max_spill: must be >= 0"),
    ("dedupe.semantic.cc_max_rounds=0", "dedupe.semantic.cc_max_rounds: must be at least 1"),
    ("decontaminate.phash.skip_tasks=[nope]", "decontaminate.phash.skip_tasks: unknown tasks"),
    ("decontaminate.benchmarks=[{name: a, path: /x, extra: 1}]", "unknown key 'decontaminate.benchmarks[0].extra'"),
])
def test_dedupe_and_decontam_values_checked_on_load(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_dedupe_defaults():
    cfg = load_config()
    assert cfg.dedupe.near.enabled and cfg.dedupe.semantic.enabled
    assert cfg.decontaminate.enabled and cfg.decontaminate.benchmarks == []
    assert (cfg.dedupe.near.num_perm, cfg.dedupe.near.ngram, cfg.dedupe.near.threshold) == (128, 5, 0.7)
    assert cfg.dedupe.near.scope == "same_media" and cfg.dedupe.semantic.rows == "captions"
    assert cfg.dedupe.semantic.threshold == 0.95 and cfg.decontaminate.ngram.n == 13
    assert (cfg.decontaminate.clip.image_threshold, cfg.decontaminate.clip.text_threshold) == (0.98, 0.5)
    assert (cfg.decontaminate.phash.threshold, cfg.decontaminate.phash.num_perm) == (0.95, 128)
