"""captioners.train_clip: the tiny CLIP trains on the corpus, saves an open_clip local-dir model
the pipeline loads, and reports AUCs on held-out pairs.

A short run (a few hundred steps) must already tell matching from mismatched captions; the
issue's bar for the corpus's deliberately wrong captions (AUC >= 0.9) is checked on the bundled
model, trained by the full run (tests/test_clip_scoring.py), whose report is checked here.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from captioners import train_clip
from captioners.clip import BUILTIN_DIR, ClipRef, ClipScorer


def test_hard_negatives_change_one_fact_each():
    rng = np.random.default_rng(0)
    cap = "a red circle, a blue square and a green triangle on a cream gradient background"
    colour, kind, count = train_clip.hard_negatives(cap, rng)
    assert colour != cap and kind != cap and count != cap
    assert colour.endswith("on a cream gradient background") and len(train_clip.ITEM_RE.findall(colour)) == 3
    assert len(train_clip.ITEM_RE.findall(count)) == 2
    one = train_clip.hard_negatives("an orange square on a white background", rng)[2]
    assert len(train_clip.ITEM_RE.findall(one)) == 2 and "an orange square" in one


def test_roc_auc_matches_its_definition():
    pos, neg = np.array([0.9, 0.8, 0.3]), np.array([0.5, 0.3, 0.1, 0.85])
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert train_clip.roc_auc(pos, neg) == pytest.approx(np.mean(pairs))


def test_short_training_run_saves_a_loadable_model(tmp_path):
    out = tmp_path / "model"
    report = train_clip.train(str(tmp_path / "corpus"), str(out), scale=1, steps=120, extra=600, batch=64)
    assert sorted(os.listdir(out)) == ["open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json",
                                       "tokenizer_config.json", "train_report.json"]
    assert report["heldout_correct"] > 10 and report["wrong"] > 3
    assert report["auc_correct_vs_mismatched"] >= 0.9, report
    scorer = ClipScorer(ClipRef(str(out)), device="cpu")
    assert scorer.embed_texts(["a red circle on a white background"]).shape == (1, 64)


def test_bundled_model_report():
    """The figures README quotes: the bundled model's own training report."""
    with open(os.path.join(BUILTIN_DIR, "tiny-clip-synth", "train_report.json")) as f:
        report = json.load(f)
    assert report["auc_correct_vs_wrong"] >= 0.9 and report["auc_correct_vs_mismatched"] >= 0.98
    assert report["checkpoint_bytes"] < 2_000_000
