"""Media near-dedupe: the perceptual embedding, faiss k-means + range search, and the Beam stage."""
import numpy as np
import pytest

from tests.beam_util import run_collect, stage_outputs
from tests.conftest import make_cfg
from tests.dedupe_data import cluster_pairs, encode, media_sample, synth_clip, synth_image
from filters.perceptual import PERCEPTUAL_DIM, frame_embedding, item_embedding
from filters.semantic import assign, brute_force_pairs, choose_k, dedupe_arrays, normalize_rows, range_pairs
from media.frames import decode_image
from pipelines.semantic_dedupe import SemanticDedupe


def _reencodes(arr):
    h, w = arr.shape[:2]
    return [encode(arr, "JPEG", 30), encode(arr, "JPEG", 85, (w // 2, h // 2)),
            encode(arr, "PNG", size=(w * 2, h * 2)), encode(arr, "JPEG", 60, (w * 3 // 4, h * 3 // 4))]


def test_perceptual_embedding_finds_reencodes_not_other_images():
    images = [synth_image(s) for s in range(40)]
    embs = np.stack([frame_embedding(a) for a in images])
    assert embs.shape == (40, PERCEPTUAL_DIM) and np.allclose(np.linalg.norm(embs, axis=1), 1, atol=1e-5)
    for a, e in zip(images[:10], embs):
        for data in _reencodes(a):
            assert frame_embedding(decode_image(data)) @ e >= 0.98
    sims = embs @ embs.T
    np.fill_diagonal(sims, -1)
    assert sims.max() < 0.9


def test_video_embedding_is_mean_of_frames_and_survives_reencoding():
    clip = synth_clip(3)
    small = [decode_image(encode(f, "JPEG", 40, (80, 60))) for f in clip]
    other = synth_clip(4)
    v, v_small, v_other = item_embedding(clip), item_embedding(small), item_embedding(other)
    manual = np.mean([frame_embedding(f) for f in clip], axis=0)
    assert np.allclose(v, manual / np.linalg.norm(manual), atol=1e-6)
    assert v @ v_small >= 0.98 and v @ v_other < 0.9
    with pytest.raises(ValueError):
        item_embedding([])


def _planted_vectors(n, d, seed, n_dups, structure=0.7):
    """Unit vectors around 50 centres (structure 0: uniform on the sphere, where k-means
    borders cut through the most duplicate pairs), with n_dups planted copies at cosine
    0.93-1.0 to a random source."""
    rng = np.random.default_rng(seed)
    centers = normalize_rows(rng.standard_normal((50, d)))
    x = normalize_rows(centers[rng.integers(0, 50, n)] * structure + normalize_rows(rng.standard_normal((n, d))) * 0.7)
    src, dst = rng.choice(n, n_dups, replace=False), rng.choice(n, n_dups, replace=False)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    cos = rng.uniform(0.93, 1.0, len(src))[:, None]
    noise = normalize_rows(rng.standard_normal((len(src), d)))
    noise = normalize_rows(noise - (noise * x[src]).sum(1, keepdims=True) * x[src])
    x[dst] = cos * x[src] + np.sqrt(1 - cos ** 2) * noise
    return normalize_rows(x)


def test_range_pairs_exact_and_inclusive():
    x = _planted_vectors(500, 32, 0, 60)
    a, b = range_pairs(x, 0.95)
    sims = x @ x.T
    iu, ju = np.triu_indices(len(x), 1)
    want = {(i, j) for i, j in zip(iu, ju) if sims[i, j] >= np.float32(0.95)}
    assert set(zip(a.tolist(), b.tolist())) == want == brute_force_pairs(x, 0.95, block=97)
    same = normalize_rows(np.ones((3, 8)))
    assert len(range_pairs(same, 1.0)[0]) == 3            # cosine exactly 1 is included
    assert range_pairs(x[:1], 0.5)[0].size == 0


def test_assign_spills_only_within_margin():
    centroids = normalize_rows(np.eye(4, dtype=np.float32))
    x = normalize_rows(np.array([[1, 0.99, 0, 0], [1, 0, 0, 0]], dtype=np.float32))
    home, extra = assign(x, centroids, spill_margin=0.05, max_spill=2)
    assert home.tolist() == [0, 0] and extra == [[1], []]
    assert assign(x, centroids, 0.05, 0)[1] == [[], []]
    assert choose_k(1_000_000, 20_000, 2000) == 500 and choose_k(10, 20_000, 2000) == 1
    assert choose_k(10**9, 20_000, 2000) == 1000          # bounded by what the sample can train


def test_semdedup_recall_against_brute_force():
    x = _planted_vectors(20000, 32, 1, 1500, structure=0.0)
    truth = brute_force_pairs(x, 0.95)
    res = dedupe_arrays(x, 0.95, sample_size=5000, target_cluster_size=500)
    assert res["k"] == 40 and len(truth) > 800
    recall = len(truth & res["pairs"]) / len(truth)
    no_spill = dedupe_arrays(x, 0.95, sample_size=5000, target_cluster_size=500, max_spill=0)
    recall0 = len(truth & no_spill["pairs"]) / len(truth)
    print(f"semantic recall vs brute force: {recall:.4f} (spill) / {recall0:.4f} (no spill)")
    assert recall >= 0.95 and recall > recall0 + 0.05              # spilling across borders matters
    assert res["pairs"] <= truth                                # exact search: no false pairs


# --- the Beam stage ---------------------------------------------------------------------------
def _run(samples, *overrides):
    return run_collect(samples, stage_outputs(SemanticDedupe(make_cfg(*overrides))))


def test_stage_removes_image_and_video_reencodes_keeps_largest():
    rows, expect_dup = [], {}
    for s in range(8):
        arr = synth_image(100 + s, 200, 150)
        rows.append(media_sample(f"img{s}", {"jpg": encode(arr, "JPEG", 92)}))
        if s < 3:   # a smaller, harsher re-encode of the same picture: a duplicate of the original
            small = media_sample(f"img{s}-small", {"jpg": encode(arr, "JPEG", 35, (100, 75))})
            rows.append(small)
            expect_dup[small.id] = rows[-2].id
    clip, other = synth_clip(7), synth_clip(8)
    video = media_sample("vid", {f"f{i}.jpg": encode(f, "JPEG", 90) for i, f in enumerate(clip)}, kind="video")
    video_small = media_sample("vid-small", {f"f{i}.jpg": encode(f, "JPEG", 45, (80, 60))
                                             for i, f in enumerate(clip)}, kind="video")
    video_other = media_sample("vid-other", {f"f{i}.jpg": encode(f, "JPEG", 90) for i, f in enumerate(other)},
                               kind="video")
    expect_dup[video_small.id] = video.id
    broken = media_sample("broken", {"jpg": b"not an image"})
    undecoded = media_sample("mp4", {"mp4": b"\x00\x00\x00\x18ftypmp42"}, kind="video")
    rows += [video, video_small, video_other, broken, undecoded]
    out = _run(rows, "dedupe.semantic.target_cluster_size=4", "dedupe.semantic.sample_size=100")
    got = {r.id: r.dup_of for r in out["rejected"]}
    assert got == expect_dup
    assert all(r.reason == "semantic_duplicate" and r.stage == "semantic_dedupe" for r in out["rejected"])
    kept = {s.id: s for s in out["kept"]}
    assert len(kept) == len(rows) - len(expect_dup)
    assert kept[video.id].scores["semantic_dup_cluster_size"] == 2.0
    assert kept[rows[0].id].scores["media_pixels"] == 200 * 150
    assert "semantic_dup_cluster_size" not in kept[broken.id].scores       # passed through, not judged
    assert out["counters"]["semantic_dedupe/undecodable_media"] == 2


def _vector_rows(x):
    rows = []
    for i, v in enumerate(x):
        s = media_sample(f"v{i}", {"jpg": b""})
        s.embeddings["clip_image"] = v
        s.scores["media_quality"] = 1.0
        rows.append(s)
    return rows


def test_stage_recall_against_brute_force_on_clip_vectors():
    """The Beam stage on given (CLIP-like) vectors: the pairs in its clusters cover >= 95% of
    the brute-force all-pairs answer on the same vectors."""
    x = _planted_vectors(3000, 32, 2, 300, structure=0.0)
    truth = brute_force_pairs(x, 0.95)
    rows = _vector_rows(x)
    out = _run(rows, "dedupe.semantic.embedding=clip_image", "dedupe.semantic.target_cluster_size=150",
               "dedupe.semantic.sample_size=3000")
    index = {s.id: i for i, s in enumerate(rows)}
    labels = list(range(len(rows)))
    for r in out["rejected"]:
        labels[index[r.id]] = index[r.dup_of]
    found = cluster_pairs(labels)
    recall = len(truth & found) / len(truth)
    print(f"Beam semantic recall vs brute force: {recall:.4f} over {len(truth)} pairs")
    assert recall >= 0.95 and out["counters"]["semantic_dedupe/kmeans_clusters"] == 20


def test_giant_clusters_are_split_and_counted():
    x = _planted_vectors(400, 16, 3, 40)
    out = _run(_vector_rows(x), "dedupe.semantic.embedding=clip_image", "dedupe.semantic.max_cluster_size=50",
               "dedupe.semantic.target_cluster_size=400")
    assert out["counters"]["semantic_dedupe/split_clusters"] == 1
    assert out["counters"]["semantic_dedupe/split_cluster_members"] >= 400
    assert out["counters"]["semantic_dedupe/kmeans_clusters"] == 1


def test_clip_mode_skips_rows_without_vectors():
    rows = _vector_rows(_planted_vectors(20, 8, 4, 0))
    rows[0].embeddings.clear()
    out = _run(rows, "dedupe.semantic.embedding=clip_image")
    assert len(out["kept"]) == 20 and out["counters"]["semantic_dedupe/not_compared"] == 1


def test_questions_about_one_picture_are_not_duplicates_unless_rows_all():
    from schemas.sample import ContentPart, Message

    arr = synth_image(300, 200, 150)
    rows = []
    for k, (q, data) in enumerate([("How many shapes?", encode(arr, "JPEG", 90)),
                                   ("What colour is the square?", encode(arr, "JPEG", 50, (100, 75)))]):
        s = media_sample(f"qa{k}", {"jpg": data}, task="vqa")
        s.messages[0].content.append(ContentPart("text", text=q))
        rows.append(s)
    caption = media_sample("cap", {"jpg": encode(arr, "PNG")})
    out = _run(rows + [caption])
    assert out["rejected"] == [] and out["counters"]["semantic_dedupe/not_compared"] == 2
    out = _run(rows + [caption], "dedupe.semantic.rows=all")
    assert len(out["kept"]) == 1 and len(out["rejected"]) == 2
    assert Message  # layout types
