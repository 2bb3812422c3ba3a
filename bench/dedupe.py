"""`python -m bench.dedupe`: MinHash throughput, LSH + clustering scaling, FAISS semantic dedupe.

In one run (each measurement in its own subprocess, so each peak RSS is its own):

1. MinHash signatures/s on the same shingled documents: filters.minhash.MinHasher (batched,
   vectorised) against datasketch's fastest path `MinHash.bulk` and against the naive loop
   calling `MinHash.update` per shingle; the signatures are checked to be bit-identical.
2. LSH + clustering (pipelines.near_dedupe.CandidateEdges + pipelines.clusters.
   ConnectedComponents on the DirectRunner) at N, 2N and 4N documents with planted near
   duplicates: wall time, its growth (ratios and the fitted exponent; 1.0 is linear).
3. FAISS semantic dedupe (filters.semantic.dedupe_arrays, the algorithm the Beam stage runs)
   on 200,000 x 512 unit vectors with planted duplicates, against brute-force all-pairs range
   search with faiss IndexFlatIP: time ratio and recall. Brute force costs N^2 d; by default it
   runs for a random quarter of the rows as queries (against all rows), its time is scaled to
   all rows (flat search time is linear in queries) and recall is measured over those
   queries' pairs; `--bf-queries 0` runs it in full.

Timings on shared machines are noisy: compare the ratios measured within one run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from bench.common import best_of, emit, peak_rss_mb, ratio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- synthetic data ----------------------------------------------------------------------------
def make_texts(n: int, seed: int, dup_share: float = 0.1, min_words: int = 8, max_words: int = 400) -> list[str]:
    """Documents with log-uniform lengths (captions to ASR transcripts); dup_share of them are
    copies of an earlier document with 3-12% of their words replaced."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(50000)])
    lengths = np.exp(rng.uniform(np.log(min_words), np.log(max_words), n)).astype(int)
    words = vocab[rng.integers(0, len(vocab), int(lengths.sum()))]
    docs, pos = [], 0
    for i, length in enumerate(lengths):
        if i > 10 and rng.random() < dup_share:
            src = docs[int(rng.integers(max(0, i - 5000), i))].split()
            edit = rng.random(len(src)) < rng.uniform(0.03, 0.12)
            for j in np.flatnonzero(edit):
                src[j] = vocab[rng.integers(0, len(vocab))]
            docs.append(" ".join(src))
        else:
            docs.append(" ".join(words[pos:pos + length]))
        pos += length
    return docs


def make_vectors(n: int, d: int, seed: int, dup_share: float = 0.05) -> np.ndarray:
    """Unit vectors around 1,000 centres (cosine ~0.36 within a centre), with dup_share of the
    rows replaced by copies of another row at cosine 0.9-1.0."""
    from filters.semantic import normalize_rows

    rng = np.random.default_rng(seed)
    centres = normalize_rows(rng.standard_normal((1000, d), dtype=np.float32))
    x = centres[rng.integers(0, 1000, n)] * 0.6 + normalize_rows(rng.standard_normal((n, d), dtype=np.float32)) * 0.8
    x = normalize_rows(x)
    k = int(n * dup_share)
    src = rng.choice(n, k, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), k, replace=False)
    cos = rng.uniform(0.9, 1.0, k).astype(np.float32)[:, None]
    noise = normalize_rows(rng.standard_normal((k, d), dtype=np.float32))
    noise = normalize_rows(noise - (noise * x[src]).sum(1, keepdims=True) * x[src])
    x[dst] = cos * x[src] + np.sqrt(1 - cos ** 2) * noise
    return normalize_rows(x)


# --- workers (each runs in its own process) ----------------------------------------------------
# Data is made once by `worker_prepare` and written to BENCH_TMP; the measuring workers only
# load it, so "rss_before_mb" is the process with its input loaded and the peak above it is the
# method's own working memory (ru_maxrss is a high-water mark: generation would mask it).
def _tmp(name: str) -> str:
    return os.path.join(os.environ["BENCH_TMP"], name)


def worker_prepare(what: str, n: int, seed: int, d: int = 0) -> dict:
    import pickle

    from filters.minhash import MinHasher, word_shingles

    t0 = time.perf_counter()
    if what == "texts":
        texts = make_texts(n, seed)
        with open(_tmp(f"texts_{n}_{seed}.pkl"), "wb") as f:
            pickle.dump((texts, [word_shingles(t) for t in texts]), f, protocol=pickle.HIGHEST_PROTOCOL)
    elif what == "signatures":
        cfg = _near_cfg()
        texts = make_texts(n, seed)
        hasher = MinHasher(cfg.num_perm, cfg.seed)
        sigs = np.concatenate([hasher.signatures([word_shingles(t) for t in texts[i:i + 512]])
                               for i in range(0, n, 512)])
        np.save(_tmp(f"sigs_{n}.npy"), sigs)
        np.save(_tmp(f"scores_{n}.npy"), np.array([len(t) for t in texts], dtype=np.float64))
    elif what == "vectors":
        np.save(_tmp(f"vectors_{n}_{d}.npy"), make_vectors(n, d, seed))
    else:
        raise ValueError(what)
    return {"prepared": what, "n": n, "seconds": round(time.perf_counter() - t0, 2)}


def _near_cfg():
    from schemas.config import load_config

    return load_config().dedupe.near


def _shingled(n_docs: int, seed: int):
    import pickle

    with open(_tmp(f"texts_{n_docs}_{seed}.pkl"), "rb") as f:
        return pickle.load(f)


def worker_minhash(method: str, n_docs: int, naive_docs: int, repeat: int) -> dict:
    from datasketch import MinHash

    from filters.minhash import MinHasher, shingles

    texts, docs = _shingled(n_docs, seed=1)
    base_rss = peak_rss_mb()
    n_shingles = sum(len(d) for d in docs)
    out = {"method": method, "docs": n_docs, "shingles": n_shingles}
    if method == "vectorised":
        hasher = MinHasher(128, 1)

        def run():
            return np.concatenate([hasher.signatures(docs[i:i + 512]) for i in range(0, len(docs), 512)])

        secs, sigs = best_of(run, repeat)
        ref = np.stack([m.hashvalues for m in MinHash.bulk(docs[:2000], num_perm=128, seed=1)])
        out["bit_identical_to_bulk"] = bool(np.array_equal(sigs[:2000], ref))

        def end_to_end():       # from text, shingling included, as the pipeline runs it
            for i in range(0, len(texts), 512):
                hasher.signatures([shingles(t) for t in texts[i:i + 512]])

        e2e, _ = best_of(end_to_end, repeat)
        out["from_text_docs_per_s"] = round(n_docs / e2e, 1)
    elif method == "bulk":
        secs, _ = best_of(lambda: MinHash.bulk(docs, num_perm=128, seed=1), repeat)
    elif method == "naive":
        sub = docs[:naive_docs]

        def run():
            for d in sub:
                m = MinHash(num_perm=128, seed=1)
                for sh in d:
                    m.update(sh)

        secs, _ = best_of(run, 1)
        secs *= n_docs / len(sub)          # per-document cost is independent of the others
        out["docs_timed"] = len(sub)
    else:
        raise ValueError(method)
    out.update(seconds=round(secs, 3), docs_per_s=round(n_docs / secs, 1),
               shingles_per_s=round(n_shingles / secs, 1), peak_rss_mb=round(peak_rss_mb(), 1),
               rss_before_mb=round(base_rss, 1))
    return out


def worker_lsh(n_docs: int) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from filters.cluster import node_key
    from filters.minhash import optimal_bands
    from pipelines.clusters import ConnectedComponents
    from pipelines.near_dedupe import CandidateEdges
    from schemas.config import load_config

    cfg = load_config().dedupe.near
    bands, rows = optimal_bands(cfg.threshold, cfg.num_perm, cfg.false_positive_weight, cfg.false_negative_weight)
    # The pipeline reads the signatures from disk in shards: a Create of the elements would
    # pickle (and bz2) them into the pipeline graph, which costs more than the LSH on the
    # DirectRunner and is not how a corpus arrives.
    sig_path, score_path = _tmp(f"sigs_{n_docs}.npy"), _tmp(f"scores_{n_docs}.npy")
    base_rss = peak_rss_mb()

    def read_shard(bounds):
        sigs, scores = np.load(sig_path, mmap_mode="r"), np.load(score_path, mmap_mode="r")
        for i in range(*bounds):
            yield node_key(float(scores[i]), f"{i:024x}"), sigs[i].tobytes(), b""

    shards = [(lo, min(lo + 4096, n_docs)) for lo in range(0, n_docs, 4096)]

    def run():
        p = beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"]))
        (p
         | beam.Create(shards, reshuffle=False)
         | "Read" >> beam.FlatMap(read_shard)
         | "Edges" >> CandidateEdges(cfg)
         | "Components" >> ConnectedComponents("near_dedupe", cfg.cc_max_rounds)
         | beam.combiners.Count.Globally())
        result = p.run()
        result.wait_until_finish()
        return {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}

    secs, counters = best_of(run, 1)
    return {"docs": n_docs, "bands": bands, "rows": rows, "threshold": cfg.threshold,
            "wall_s": round(secs, 3), "docs_per_s": round(n_docs / secs, 1),
            "candidate_buckets": counters.get("near_dedupe/candidate_buckets", 0),
            "verified_pairs": counters.get("near_dedupe/verified_pairs", 0),
            "clusters": counters.get("near_dedupe/clusters", 0),
            "cluster_members": counters.get("near_dedupe/cluster_members", 0),
            "unconverged_nodes": counters.get("near_dedupe/cc_unconverged_nodes", 0),
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(base_rss, 1)}


def worker_semantic(n: int, d: int) -> dict:
    from schemas.config import load_config
    from filters.semantic import dedupe_arrays

    cfg = load_config().dedupe.semantic
    x = np.load(_tmp(f"vectors_{n}_{d}.npy"))
    base_rss = peak_rss_mb()
    t0 = time.perf_counter()
    res = dedupe_arrays(x, cfg.threshold, sample_size=cfg.sample_size, target_cluster_size=cfg.target_cluster_size,
                        niter=cfg.kmeans_iters, seed=cfg.seed, spill_margin=cfg.spill_margin,
                        max_spill=cfg.max_spill)
    secs = time.perf_counter() - t0
    pairs = np.array(sorted(res["pairs"]), dtype=np.int64).reshape(-1, 2)
    np.save(_tmp("semantic_pairs.npy"), pairs)
    return {"n": n, "d": d, "seconds": round(secs, 3), "clusters": res["k"], "largest_cluster": res["sizes"][0],
            "pairs_found": len(pairs), "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(base_rss, 1)}


def worker_brute_force(n: int, d: int, queries: int, threshold: float) -> dict:
    from filters.semantic import brute_force_pairs

    x = np.load(_tmp(f"vectors_{n}_{d}.npy"))
    base_rss = peak_rss_mb()
    rng = np.random.default_rng(4)
    q = None if queries <= 0 or queries >= n else np.sort(rng.choice(n, queries, replace=False))
    t0 = time.perf_counter()
    found = brute_force_pairs(x, threshold, queries=q)
    secs = time.perf_counter() - t0
    pairs = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)
    np.save(_tmp("bf_pairs.npy"), pairs)
    n_q = n if q is None else len(q)
    return {"queries": n_q, "seconds": round(secs, 3), "seconds_all_rows": round(secs * n / n_q, 3),
            "pairs": int(len(pairs)), "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(base_rss, 1)}


WORKERS = {"prepare": worker_prepare, "minhash": worker_minhash, "lsh": worker_lsh, "semantic": worker_semantic,
           "brute_force": worker_brute_force}


def _spawn(part: str, tmp: str, **kwargs) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
               BENCH_TMP=tmp)
    proc = subprocess.run([sys.executable, "-m", "bench.dedupe", "--worker", part, "--kwargs", json.dumps(kwargs)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench part {part} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minhash-docs", type=int, default=20000)
    ap.add_argument("--naive-docs", type=int, default=2000, help="documents the naive loop is timed on")
    ap.add_argument("--n", type=int, default=50000, help="N of the LSH scaling (runs N, 2N, 4N)")
    ap.add_argument("--vectors", type=int, default=200000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--bf-queries", type=int, default=50000, help="brute-force query rows (0: all)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip", action="append", default=[], choices=["minhash", "lsh", "faiss"])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--kwargs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](**json.loads(args.kwargs))
        print(json.dumps(result))
        return result

    import tempfile

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_dedupe_") as tmp:
        if "minhash" not in args.skip:
            _spawn("prepare", tmp, what="texts", n=args.minhash_docs, seed=1)
            parts = {m: _spawn("minhash", tmp, method=m, n_docs=args.minhash_docs, naive_docs=args.naive_docs,
                               repeat=args.repeat) for m in ("vectorised", "bulk", "naive")}
            v, b, nv = parts["vectorised"], parts["bulk"], parts["naive"]
            results["minhash"] = {
                "docs": v["docs"], "shingles": v["shingles"], "num_perm": 128, "shingle": "word 5-grams",
                "vectorised": {k: v[k] for k in ("docs_per_s", "shingles_per_s", "from_text_docs_per_s",
                                                 "peak_rss_mb", "rss_before_mb", "bit_identical_to_bulk")},
                "datasketch_bulk": {k: b[k] for k in ("docs_per_s", "shingles_per_s", "peak_rss_mb", "rss_before_mb")},
                "datasketch_naive_update": {k: nv[k] for k in ("docs_per_s", "shingles_per_s", "peak_rss_mb",
                                                               "rss_before_mb", "docs_timed")},
                "vectorised_vs_bulk": ratio(v["docs_per_s"], b["docs_per_s"]),
                "vectorised_vs_naive": ratio(v["docs_per_s"], nv["docs_per_s"]),
                "bulk_vs_naive": ratio(b["docs_per_s"], nv["docs_per_s"]),
            }
        if "lsh" not in args.skip:
            sizes = []
            for m in (1, 2, 4):
                _spawn("prepare", tmp, what="signatures", n=args.n * m, seed=2)
                sizes.append(_spawn("lsh", tmp, n_docs=args.n * m))
            t1, t2, t4 = (s["wall_s"] for s in sizes)
            results["lsh_clustering"] = {
                "runner": "DirectRunner (in_memory)", "sizes": sizes,
                "time_ratio_2n": ratio(t2, t1), "time_ratio_4n": ratio(t4, t1),
                "scaling_exponent": round(math.log(t4 / t1) / math.log(4), 3),
                # cost of each extra document between consecutive sizes: equal if linear (the
                # runner's fixed start-up cost drops out of the difference)
                "marginal_us_per_doc": [round(1e6 * (t2 - t1) / args.n, 1), round(1e6 * (t4 - t2) / (2 * args.n), 1)],
                "note": "scaling_exponent: of wall time in corpus size from N to 4N, 1.0 is linear",
            }
        if "faiss" not in args.skip:
            from schemas.config import load_config

            threshold = load_config().dedupe.semantic.threshold     # the one worker_semantic runs
            _spawn("prepare", tmp, what="vectors", n=args.vectors, seed=3, d=args.dim)
            sem = _spawn("semantic", tmp, n=args.vectors, d=args.dim)
            bf = _spawn("brute_force", tmp, n=args.vectors, d=args.dim, queries=args.bf_queries,
                        threshold=threshold)
            found = {tuple(p) for p in np.load(os.path.join(tmp, "semantic_pairs.npy")).tolist()}
            truth = {tuple(p) for p in np.load(os.path.join(tmp, "bf_pairs.npy")).tolist()}
            results["faiss_semantic"] = {
                "vectors": args.vectors, "dim": args.dim, "threshold": threshold, "semantic": sem, "brute_force": bf,
                "time_ratio_brute_force_over_semantic": ratio(bf["seconds_all_rows"], sem["seconds"]),
                "recall": round(len(truth & found) / max(len(truth), 1), 4),
                "recall_over_pairs": len(truth),
                "faiss_gpu": _gpu(),
            }
    results["peak_rss_mb_parent"] = round(peak_rss_mb(), 1)
    return emit("dedupe", results)


def _gpu() -> bool:
    from filters.semantic import gpu_available

    return gpu_available()


if __name__ == "__main__":
    main()
