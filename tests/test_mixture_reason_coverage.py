"""Every mixture reason code (`MIXTURE_REASONS`), produced by the real build_mixture pipeline: one
planted input row per reason. tests/test_reason_coverage.py plants every other Reason through
`curate`; together the two cover every Reason. A new mixture Reason without an entry in PLANTED
fails `test_every_mixture_reason_is_planted`.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.build_mixture import build_mixture
from pipelines.launch import run
from schemas.reasons import MIXTURE_REASONS, Reason
from tests import media_util as mu

pytestmark = pytest.mark.slow

# Shares: non-thinking and video no-think 1:1. Three QA rows and one video QA row (two variants)
# scale to 2 + 2 samples, so exactly one QA row is left out to meet its share.
OVERRIDES = ["mixture.shares.targets={non_thinking: 1, video_no_think: 1}", "media.quality.min_motion=0",
             "media.decode.isolation=in_process", "dedupe.near.enabled=false", "dedupe.semantic.enabled=false"]


def _image(seed):
    rng = np.random.default_rng(seed)
    return mu.image_bytes(np.clip(100 + 20 * rng.standard_normal((64, 96, 3)), 0, 255).astype(np.uint8)
                          + np.uint8(seed * 7 % 50))


def _moving(i, h=48, w=64):
    return np.clip(120 + np.roll(mu.texture(h, w), 3 * i, axis=1), 0, 255).astype(np.uint8).repeat(3).reshape(h, w, 3)


# reason -> (what is planted, how the test finds its rejected input row)
PLANTED = {
    Reason.NO_MODE: "a caption pair: no question, no mode builder wants it",
    Reason.OVER_SHARE: "one of three QA rows beyond non_thinking's share",
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture_reasons")
    inp = root / "in"
    inp.mkdir()
    for i in range(4):
        (inp / f"img{i}.png").write_bytes(_image(i))
    (inp / "clip.mp4").write_bytes(mu.video_of(_moving, 40, fps=10))
    rows = [{"image": "img0.png", "caption": "a grey picture with noise"}]
    rows += [{"image": f"img{i}.png", "question": f"What is in picture number {i}?", "answer": f"Noise {i}."}
             for i in (1, 2, 3)]
    rows += [{"video": "clip.mp4", "question": "Which way does the texture move?", "answer": "To the right."}]
    (inp / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "out"
    argv = ["--input", str(inp / "rows.jsonl"), "--output", str(out), "--progress_s", "0"]
    for o in OVERRIDES:
        argv += ["--set", o]
    manifest = run("build_mixture", build_mixture, argv)
    return manifest, pq.read_table(str(out / "rejected")).to_pylist(), pq.read_table(str(out / "parquet")).to_pylist()


def test_every_mixture_reason_is_planted():
    assert set(PLANTED) == set(MIXTURE_REASONS)


def test_each_mixture_reason_is_produced(planted):
    manifest, rejected, kept = planted
    inputs = [r for r in rejected if "@" not in r["id"]]
    derived = [r for r in rejected if "@" in r["id"]]
    assert {(r["stage"], r["reason"]) for r in inputs} == {("mixture", r.value) for r in PLANTED}
    assert [r["source_ref"] for r in inputs if r["reason"] == "no_mode"] == ["rows.jsonl:1"]
    over = [r for r in inputs if r["reason"] == "over_share"]
    assert len(over) == 1 and over[0]["source_ref"] in ("rows.jsonl:2", "rows.jsonl:3", "rows.jsonl:4")
    assert [r["id"] for r in derived] == [over[0]["id"] + "@no_think"]        # its derived row, rejected too
    assert all(r["detail"] for r in rejected)
    assert sorted(r["id"].split("@")[1] for r in kept) == ["16f", "32f", "no_think", "no_think"]


def test_manifest_balances_inputs_and_derived_rows(planted):
    manifest, rejected, kept = planted
    t, d = manifest.totals, manifest.derived
    assert t.balanced and t.input_rows == 5 and t.kept == 3 and t.rejected == 2
    assert d.balanced and d.made == 5 and d.kept == len(kept) == 4 and d.rejected == 1
    assert d.made_by == {"mixture/non_thinking": {"inputs": 3, "rows": 3},
                         "mixture/video_no_think": {"inputs": 1, "rows": 2}}
    shares = manifest.mixture["categories"]
    assert shares["non_thinking"]["achieved_samples"] == shares["video_no_think"]["achieved_samples"] == 2
    assert shares["non_thinking"]["target_share"] == 0.5
