"""Embedding near-duplicates, SemDeDup style, with faiss (GPU when present, CPU otherwise).

1. `train_centroids`: spherical k-means (faiss.Kmeans) on a bounded, deterministic sample.
2. `assign`: every vector goes to its nearest centroid ("home") and, to recover pairs that
   straddle a Voronoi border, also to up to `max_spill` further centroids whose similarity is
   within `spill_margin` of the best ("guest"). Classic SemDeDup is max_spill = 0.
3. `range_pairs`: inside one cluster, an exact inner-product range search (IndexFlatIP) for
   every pair with cosine >= threshold. On a GPU, faiss has no range search; the exact search
   is emulated with a k-NN search plus CPU fallback (faiss.contrib.exhaustive_search). Clusters
   under GPU_MIN_ROWS stay on the CPU, and callers reuse one `gpu_resources()` across clusters.

`dedupe_arrays` chains the three over in-memory arrays (the benchmark and tests use it as the
Beam-free reference); `pipelines/semantic_dedupe.py` runs the same steps as Beam transforms,
where no worker holds more than the sample, the centroids or one cluster.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np

GPU_MIN_ROWS = 256      # below this a flat search takes milliseconds on the CPU; the GPU adds copies and launches


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """faiss built with GPU support (faiss-gpu) and at least one visible GPU."""
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means CPU
        return False


def gpu_resources(use_gpu: Optional[bool] = None):
    """faiss GPU resources (cuBLAS handle, streams, scratch memory: costly to create) for
    `range_pairs` to reuse, or None on the CPU. Not thread-safe: one per DoFn instance or
    loop, never a module-level cache."""
    if not (gpu_available() if use_gpu is None else use_gpu):
        return None
    import faiss

    return faiss.StandardGpuResources()


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def choose_k(total: int, sample_size: int, target_cluster_size: int, min_points_per_centroid: int = 20) -> int:
    """Clusters for `total` vectors: about target_cluster_size per cluster, but never more than
    the sample can train (min_points_per_centroid sample points each)."""
    want = math.ceil(max(total, 1) / max(target_cluster_size, 1))
    return max(1, min(want, sample_size // max(min_points_per_centroid, 1)))


def train_centroids(sample: np.ndarray, k: int, niter: int = 20, seed: int = 1234,
                    use_gpu: Optional[bool] = None) -> np.ndarray:
    """(k, d) unit-norm centroids of spherical k-means on the sample (deterministic seed)."""
    import faiss

    x = normalize_rows(sample)
    k = max(1, min(k, len(x)))
    if k == 1:
        return normalize_rows(x.mean(axis=0, keepdims=True))
    gpu = gpu_available() if use_gpu is None else use_gpu
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, gpu=gpu,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, len(x) // k + 1),
                      verbose=False)
    km.train(x)
    return normalize_rows(km.centroids)


def assign(x: np.ndarray, centroids: np.ndarray, spill_margin: float = 0.0,
           max_spill: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """(home cluster per row, extra clusters per row). Extra clusters: up to max_spill of the
    next-nearest centroids whose similarity is at least best - spill_margin."""
    import faiss

    x = normalize_rows(x)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    k = min(len(centroids), 1 + max(0, max_spill))
    sims, ids = index.search(x, k)
    home = ids[:, 0].astype(np.int64)
    extra: list[list[int]] = []
    for row_s, row_i in zip(sims, ids):
        extra.append([int(c) for s, c in zip(row_s[1:], row_i[1:]) if c >= 0 and s >= row_s[0] - spill_margin])
    return home, extra


def range_pairs(x: np.ndarray, threshold: float, use_gpu: Optional[bool] = None,
                gpu_res=None) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with x_i . x_j >= threshold: exact (flat index), vectors unit-norm.
    use_gpu None: the GPU when present and the cluster has GPU_MIN_ROWS rows; gpu_res: the
    caller's `gpu_resources()`, made here per call when None."""
    import faiss

    x = normalize_rows(x)
    n, d = x.shape
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cpu = faiss.IndexFlatIP(d)
    cpu.add(x)
    # faiss returns sims > radius for similarity metrics; nudge down to keep ">= threshold"
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    if (n >= GPU_MIN_ROWS and gpu_available()) if use_gpu is None else use_gpu:
        from faiss.contrib.exhaustive_search import range_search_gpu

        res = gpu_res if gpu_res is not None else faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, cpu)
        lims, _, ids = range_search_gpu(x, radius, gpu, cpu, gpu_k=min(1024, n))
    else:
        lims, _, ids = cpu.range_search(x, radius)
    counts = np.diff(lims.astype(np.int64))
    qi = np.repeat(np.arange(n, dtype=np.int64), counts)
    ids = ids.astype(np.int64)
    keep = qi < ids
    return qi[keep], ids[keep]


def dedupe_arrays(x: np.ndarray, threshold: float = 0.95, sample_size: int = 20000,
                  target_cluster_size: int = 2000, niter: int = 20, seed: int = 1234,
                  spill_margin: float = 0.05, max_spill: int = 2,
                  use_gpu: Optional[bool] = None) -> dict:
    """The whole method over an in-memory array: returns {"pairs": set of (i, j) found,
    "labels": component minimum index per row, "k": clusters, "sizes": cluster sizes}."""
    from filters.cluster import UnionFind

    x = normalize_rows(x)
    n = len(x)
    rng = np.random.default_rng(seed)
    sample_idx = np.sort(rng.choice(n, size=min(n, sample_size), replace=False))
    k = choose_k(n, len(sample_idx), target_cluster_size)
    centroids = train_centroids(x[sample_idx], k, niter=niter, seed=seed, use_gpu=use_gpu)
    home, extra = assign(x, centroids, spill_margin, max_spill)
    members: dict[int, list[int]] = {}
    for i, (h, ex) in enumerate(zip(home, extra)):
        members.setdefault(int(h), []).append(i)
        for c in ex:
            members.setdefault(c, []).append(i)
    pairs = set()
    res = gpu_resources(use_gpu)
    for idx in members.values():
        idx = np.asarray(idx)
        a, b = range_pairs(x[idx], threshold, use_gpu, res)
        pairs.update(zip(idx[a].tolist(), idx[b].tolist()))
    uf = UnionFind(n)
    for i, j in pairs:
        uf.union(i, j)
    return {"pairs": pairs, "labels": np.array([uf.find(i) for i in range(n)]), "k": len(centroids),
            "sizes": sorted((len(v) for v in members.values()), reverse=True)}


def brute_force_pairs(x: np.ndarray, threshold: float, block: int = 8192, queries=None) -> set:
    """Every pair (i, j), i < j, with cosine >= threshold, by exhaustive blocked search: the
    reference. queries: search only from these rows (pairs with at least one of them), so a
    benchmark can time a subset of an N^2 search."""
    import faiss

    x = normalize_rows(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    q = np.arange(len(x)) if queries is None else np.asarray(queries, dtype=np.int64)
    pairs = set()
    for lo in range(0, len(q), block):
        qs = q[lo:lo + block]
        lims, _, ids = index.range_search(x[qs], radius)
        qi = np.repeat(qs, np.diff(lims.astype(np.int64)))
        # all rows: each pair from its smaller end, as range_pairs; a subset: from either end
        keep = qi < ids if queries is None else qi != ids
        pairs.update(zip(np.minimum(qi, ids)[keep].tolist(), np.maximum(qi, ids)[keep].tolist()))
    return pairs
