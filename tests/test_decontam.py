"""Benchmark decontamination: the rules on their own, then the Beam stage over real manifests."""
import json

import numpy as np
import pytest

from tests.beam_util import run_collect, stage_outputs
from tests.conftest import make_cfg
from tests.dedupe_data import encode, media_sample, synth_image, text_sample
from filters.decontam import BenchmarkItem, DecontamIndex, RowFeatures, text_ngrams
from filters.phash import phash64
from pipelines.decontaminate import Decontaminate
from schemas.config import ConfigError
from schemas.sample import ContentPart, Message

QUESTION = ("Which of the following statements about the chart comparing quarterly revenue of the "
            "three regional branches is correct")
TEMPLATE = "Answer with the option's letter from the given choices directly and explain nothing else at all please"


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


# --- rules -------------------------------------------------------------------------------------
def test_ngram_rule():
    idx = DecontamIndex([BenchmarkItem("mmb", "q1", ngrams=text_ngrams([QUESTION, "Answer: B"])),
                         BenchmarkItem("mmb", "q2", ngrams=text_ngrams(["too short to index"]))])
    assert len(text_ngrams(["one two three"])) == 0
    copied = text_ngrams(["Look at this. " + QUESTION.upper() + "? The answer is B."])
    m, overlap = idx.match_ngrams(copied)
    assert m.benchmark == "mmb" and m.item_id == "q1" and m.rule == "ngram" and 0 < overlap < 1
    assert json.loads(m.detail())["item"] == "q1"
    words = QUESTION.split()
    assert idx.match_ngrams(text_ngrams([" ".join(words[:12])]))[0] is None        # 12 words: no 13-gram
    assert idx.match_ngrams(text_ngrams([" ".join(words[:6]) + " x " + " ".join(words[6:])]))[0] is None


def test_template_ngrams_are_not_indexed():
    items = [BenchmarkItem("b", f"i{k}", ngrams=text_ngrams([f"{TEMPLATE} question number {k}"])) for k in range(25)]
    idx = DecontamIndex(items, max_items_per_ngram=20)
    assert idx.match_ngrams(text_ngrams([TEMPLATE]))[0] is None
    assert idx.stats()["template_ngrams_dropped"] > 0
    assert DecontamIndex(items).match_ngrams(text_ngrams([TEMPLATE]))[0] is not None


def test_phash_rule_keye():
    a, b, c = (synth_image(s) for s in (1, 2, 3))
    idx = DecontamIndex([BenchmarkItem("mmb", "img-a", phashes=[phash64(a)]),
                         BenchmarkItem("mmb", "img-b", phashes=[phash64(b)])])
    m, j = idx.match_phash([phash64(c), phash64(b)])      # any image of a multi-image row
    assert m.item_id == "img-b" and m.rule == "phash" and j == 1.0
    m, j = idx.match_phash([phash64(c)])
    assert m is None and j < 0.95
    h = phash64(a)
    low = min(i for i in range(64) if h >> i & 1)
    high = min(i for i in range(64) if not h >> i & 1)
    swapped = h ^ (1 << low) ^ (1 << high)                # 31/33 = 0.94: not > 0.95
    assert idx.match_phash([swapped])[0] is None
    assert DecontamIndex(idx.items, phash_threshold=0.9).match_phash([swapped])[0].item_id == "img-a"
    assert idx.match_phash([h | (1 << high)])[0].item_id == "img-a"   # one extra bit: 32/33 = 0.97


def test_phash_lsh_recall_against_exhaustive_check():
    """Every benchmark image whose set-bit Jaccard with the query exceeds the threshold is
    found through the LSH buckets (checked against comparing all pairs)."""
    rng = np.random.default_rng(0)
    bench = [int(x) for x in rng.integers(0, 2**63, 3000, dtype=np.int64)]
    idx = DecontamIndex([BenchmarkItem("b", str(i), phashes=[h]) for i, h in enumerate(bench)])
    found = missed = 0
    for h in bench[:300]:
        bit = 1 << int(rng.integers(0, 64))
        q = h | bit                                         # one extra bit, or the same hash
        m, _ = idx.match_phash([q])
        want = [i for i, x in enumerate(bench) if (x & q).bit_count() / (x | q).bit_count() > 0.95]
        if want:
            found += m is not None and int(m.item_id) in want
            missed += m is None
    assert found >= 0.97 * (found + missed)


def test_clip_rule_needs_image_and_text_on_one_item():
    rng = np.random.default_rng(1)
    img, txt, other = (_unit(rng.standard_normal(64)) for _ in range(3))
    idx = DecontamIndex([BenchmarkItem("mmb", "q1", clip_image=np.stack([img]), clip_text=txt),
                         BenchmarkItem("mmb", "q2", clip_image=np.stack([other]), clip_text=other)])
    near_img = _unit(img + 0.05 * _unit(rng.standard_normal(64)))     # cosine ~0.999
    assert near_img @ img > 0.98
    near_txt = _unit(txt + 1.0 * _unit(rng.standard_normal(64)))       # cosine ~0.7
    far_txt = _unit(rng.standard_normal(64))
    m, best = idx.match_clip(near_img, near_txt)
    assert m.item_id == "q1" and m.rule == "clip" and best > 0.98 and json.loads(m.detail())["text_cosine"] > 0.5
    assert idx.match_clip(near_img, far_txt)[0] is None                 # image alone is not enough
    assert idx.match_clip(_unit(img + 0.5 * _unit(rng.standard_normal(64))), txt)[0] is None   # text alone
    assert idx.match_clip(np.stack([other, near_img]), near_txt)[0].item_id == "q1"           # any row image
    assert idx.match_clip(None, txt) == (None, None)
    v = idx.judge(RowFeatures(phashes=[], ngrams=text_ngrams(["x"]), clip_image=near_img, clip_text=near_txt))
    assert v.match.rule == "clip" and v.clip_image_cos > 0.98


# --- the Beam stage over benchmark manifests -------------------------------------------------
@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    imgs = {name: synth_image(seed) for name, seed in (("a", 11), ("b", 12), ("c", 13), ("d", 14))}
    for name, arr in imgs.items():
        (d / f"{name}.png").write_bytes(encode(arr, "PNG"))
    rng = np.random.default_rng(5)
    clip_img, clip_txt = _unit(rng.standard_normal(32)), _unit(rng.standard_normal(32))
    rows = [
        {"id": "q1", "image": "a.png", "question": QUESTION, "answer": "B"},
        {"id": "q2", "images": ["b.png", "c.png"], "question": "Which picture is brighter?", "answer": "The left one."},
        {"id": "q3", "image": "d.png", "question": "What is shown?", "answer": "Shapes.",
         "embeddings": {"clip_image": clip_img.tolist(), "clip_text": clip_txt.tolist()}},
    ] + [{"id": f"t{k}", "question": f"{TEMPLATE} item {k}", "answer": "A"} for k in range(25)]
    (d / "mmbench.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    llava = [{"id": "v1", "conversations": [
        {"from": "human", "value": "Describe the seven wonders of the ancient world in order of construction please"},
        {"from": "gpt", "value": "The Great Pyramid of Giza came first."}]}]
    (d / "other.json").write_text(json.dumps(llava))
    return d, imgs, clip_img, clip_txt


def _with_text(s, text, task=None):
    s.messages[-1].content = [ContentPart("text", text=text)]
    if task:
        s.task = task
    return s


def test_stage_rejects_copies_with_benchmark_name_item_and_rule(bench_dir):
    d, imgs, clip_img, clip_txt = bench_dir
    rng = np.random.default_rng(9)
    rows = {
        "image_copy": media_sample("r1", {"jpg": encode(imgs["a"], "PNG")}),       # lossless re-encode
        "multi_image": media_sample("r2", {"x.jpg": encode(synth_image(50), "PNG")}),
        "question_copy": text_sample("Here is a quiz. " + QUESTION + "? Think step by step.", "r3"),
        "llava_copy": text_sample("describe the Seven Wonders of the ancient world in order of construction, please!", "r4"),
        "post_training_image_only": _with_text(media_sample("r5", {"jpg": encode(imgs["b"], "PNG")}),
                                               "A different question about it.", task="cold_start"),
        "clip_copy": _with_text(media_sample("r6", {"jpg": encode(synth_image(51), "PNG")}), "q", "cold_start"),
        "clip_image_only": _with_text(media_sample("r7", {"jpg": encode(synth_image(52), "PNG")}), "q", "cold_start"),
        "template_only": text_sample(TEMPLATE + " and then stop", "r8"),
        "clean": media_sample("r9", {"jpg": encode(synth_image(53), "JPEG", 90)}),
    }
    # a second image in the multi-image row: benchmark image c
    s = rows["multi_image"]
    s.media.append(type(s.media[0])(kind="image", uri="/x/c", members=[f"{s.id}.1.png"]))
    s.blobs[f"{s.id}.1.png"] = encode(imgs["c"], "PNG")
    s.messages[0].content.append(ContentPart("image", media_index=1))
    near = _unit(clip_img + 0.02 * _unit(rng.standard_normal(32)))
    rows["clip_copy"].embeddings.update(clip_image=near, clip_text=_unit(clip_txt + 0.8 * _unit(rng.standard_normal(32))))
    rows["clip_image_only"].embeddings.update(clip_image=near, clip_text=_unit(rng.standard_normal(32)))
    cfg = make_cfg(f"decontaminate.benchmarks=[{{name: mmb, path: {d}/mmbench.jsonl}}, "
                   f"{{name: other, path: {d}/other.json}}]")
    out = run_collect(list(rows.values()), stage_outputs(Decontaminate(cfg)))
    got = {r.id: json.loads(r.detail) for r in out["rejected"]}
    assert all(r.reason == "contaminated" and r.stage == "decontaminate" for r in out["rejected"])
    want = {"image_copy": ("mmb", "q1", "phash"), "multi_image": ("mmb", "q2", "phash"),
            "question_copy": ("mmb", "q1", "ngram"), "llava_copy": ("other", "v1", "ngram"),
            "clip_copy": ("mmb", "q3", "clip")}
    assert {k: (got[rows[k].id]["benchmark"], got[rows[k].id]["item"], got[rows[k].id]["rule"])
            for k in want if rows[k].id in got} == want
    kept = {s.id: s for s in out["kept"]}
    assert set(kept) == {rows[k].id for k in rows if k not in want}
    clean = kept[rows["clean"].id]
    assert clean.scores["benchmark_ngram_overlap"] == 0.0 and clean.scores["benchmark_phash_jaccard"] < 0.95
    assert "benchmark_phash_jaccard" not in kept[rows["post_training_image_only"].id].scores  # rule skipped
    assert kept[rows["clip_image_only"].id].scores["benchmark_clip_image_cos"] > 0.98
    assert out["counters"]["decontaminate/benchmark_items"] == 29


def test_benchmark_media_resolve_against_the_benchmark_folder(bench_dir, tmp_path):
    d, imgs, _, _ = bench_dir
    row = media_sample("r1", {"jpg": encode(imgs["a"], "PNG")})
    cfg = make_cfg(f"decontaminate.benchmarks=[{{name: mmb, path: {d}/mmbench.jsonl}}]",
                   f"ingest.media_root={tmp_path}")           # the corpus's media live elsewhere
    out = run_collect([row], stage_outputs(Decontaminate(cfg)))
    assert [json.loads(r.detail)["item"] for r in out["rejected"]] == ["q1"]


def test_no_benchmarks_means_no_stage_and_bad_recipes_fail():
    from pipelines.curate import curation_stages

    assert "Decontaminate" not in [label for label, _ in curation_stages(make_cfg())]
    assert "Decontaminate" in [label for label, _ in curation_stages(
        make_cfg("decontaminate.benchmarks=[{name: a, path: /x}]"))]
    with pytest.raises(ConfigError, match="names must be unique"):
        make_cfg("decontaminate.benchmarks=[{name: a, path: /x}, {name: a, path: /y}]")
    with pytest.raises(ConfigError, match="missing key"):
        make_cfg("decontaminate.benchmarks=[{name: a}]")
    assert Message  # layout types used above


def test_video_copying_a_benchmark_video_is_contaminated(tmp_path):
    """Benchmark videos go through the training rows' media step: the same frames are sampled
    on both sides, so a copied video matches frame pHashes; another video does not."""
    from filters.media import MediaFilter
    from schemas.input import RowContext, normalize_row
    from tests.dedupe_data import synth_clip
    from tests.media_util import encode_video

    clip = encode_video(synth_clip(9, frames=30, w=160, h=120), fps=10)
    other = encode_video(synth_clip(10, frames=30, w=160, h=120), fps=10)
    (tmp_path / "clip.mp4").write_bytes(clip)
    (tmp_path / "other.mp4").write_bytes(other)
    (tmp_path / "copy.mp4").write_bytes(clip)
    (tmp_path / "bench.jsonl").write_text(json.dumps(
        {"id": "v1", "video": "clip.mp4", "question": "Which way does the square move?", "answer": "Right."}) + "\n")
    cfg = make_cfg(f"decontaminate.benchmarks=[{{name: vb, path: {tmp_path}/bench.jsonl}}]")
    step = MediaFilter(cfg)
    rows = []
    for name in ("copy.mp4", "other.mp4"):
        ctx = RowContext(source="t", source_ref=name, base_dir=str(tmp_path), max_field_chars=1000,
                         max_media_per_row=4, max_messages=4)
        row = step(normalize_row({"video": name, "caption": "a clip of moving shapes"}, ctx))
        assert len(row.media[0].members) > 1              # sampled frames, as the media stage stores them
        rows.append(row)
    out = run_collect(rows, stage_outputs(Decontaminate(cfg)))
    assert [(r.source_ref, json.loads(r.detail)["rule"], json.loads(r.detail)["item"]) for r in out["rejected"]] \
        == [("copy.mp4", "phash", "v1")]
    assert [s.source_ref for s in out["kept"]] == ["other.mp4"]


def test_clip_rule_with_benchmark_vectors_from_the_score_stages_model(tmp_path):
    """With the score stage on, benchmark items are embedded by the same CLIP model as training
    rows, so Keye's post-training rule (image cos > 0.98 and text cos > 0.5) fires on its own:
    pHash is off and the question is too short for a 13-gram."""
    from pipelines.common import KEPT, REJECTED
    from pipelines.score import Score

    image = synth_image(61)
    (tmp_path / "e.png").write_bytes(encode(image, "PNG"))
    question, answer = "Which shape is red?", "The circle."
    (tmp_path / "evalset.jsonl").write_text(json.dumps({"id": "e1", "image": "e.png", "question": question,
                                                        "answer": answer}) + "\n")
    cfg = make_cfg("score.enabled=true", "score.model=builtin:tiny-clip-synth", "score.pretrained=null",
                   "decontaminate.phash.enabled=false",
                   f"decontaminate.benchmarks=[{{name: evalset, path: {tmp_path}/evalset.jsonl}}]")
    copy = _with_text(media_sample("c1", {"png": encode(image, "PNG")}), answer, task="vqa")
    copy.messages[0].content.append(ContentPart("text", text=question))
    clean = _with_text(media_sample("c2", {"png": encode(synth_image(62), "PNG")}), answer, task="vqa")
    clean.messages[0].content.append(ContentPart("text", text=question))

    def build(pcoll):
        scored = pcoll | "Score" >> Score(cfg)
        out = scored[KEPT] | "Decontaminate" >> Decontaminate(cfg)
        return {"kept": out[KEPT], "rejected": out[REJECTED]}

    out = run_collect([copy, clean], build)
    (rejected,) = out["rejected"]
    detail = json.loads(rejected.detail)
    assert rejected.id == copy.id and (detail["benchmark"], detail["item"], detail["rule"]) == ("evalset", "e1", "clip")
    (kept,) = out["kept"]
    assert kept.id == clean.id and kept.scores["benchmark_clip_image_cos"] < 0.98
