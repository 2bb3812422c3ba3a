"""Image and video near-duplicate removal (SemDeDup style) with faiss.

    rows --Embed (batched)--> (node, unit vector) per row with media
    vectors --Top.Smallest(sample_size, by id)--> one bounded, deterministic training sample
            --TrainCentroids (one DoFn, faiss k-means)--> centroids, a side input
    vectors --Assign (batched, side input)--> (cluster, member) for the home cluster and up
            to max_spill near-border clusters
            --Split giant clusters by id hash--> GroupByKey --RangeSearch (exact, faiss)--> edges
    edges --ConnectedComponents--> (id, (representative, size)) --join rows--> kept / rejected

What each worker holds: Embed one batch of rows; training the sample (`sample_size` vectors,
61 MB at 20,000 x 769 floats) and the centroids; RangeSearch one cluster, at most
`max_cluster_size` vectors (a cluster larger than that is split by id hash: counted in
semantic_dedupe/split_clusters, since pairs across the parts are not searched). Nothing
holds the whole corpus.

Embeddings: `embedding: perceptual` (default) decodes each image / frame and uses the
built-in thumbnail embedding (filters/perceptual.py); `embedding: clip_image` uses
`Sample.embeddings["clip_image"]` from the CLIP stage ((d,) per row or (n_items, d)) and
skips rows without it. One space per run: vectors of different models are never compared.

Which rows: with `rows: captions` (the default) only rows whose user turns hold nothing but
media (and the recipe's default caption prompt): caption pairs and video captions, where one
picture is one sample. A row that asks a question about a picture is not a duplicate of
another question about the same picture (VQA sets ask several; LLaVA-Instruct has several
conversations per COCO image), so it keeps its picture; `rows: all` compares every row with
media (SemDeDup over everything). Exact copies of a whole row are exact dedupe's.

Rows with several media items: the row's vector is the normalised mean of its items'
vectors (a video item's is the normalised mean of its frames'), so two rows are duplicates
when their media, taken together, are; a row sharing one of several images with another is
not. Rows without media, or whose media cannot be decoded here (undecoded video before the
media stage), are passed through uncompared and counted (semantic_dedupe/not_compared).

The representative of a cluster: highest `quality_score` (default `media_quality`: the largest
source resolution, then the most source bytes, i.e. the original rather than a smaller or
lower-bitrate re-encode), then the smallest id.
"""
from __future__ import annotations

import zlib
from typing import Optional

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsDict, AsSingleton, TaggedOutput

from filters.cluster import node_id, node_key, star_edges
from filters.semantic import assign, choose_k, gpu_resources, range_pairs, train_centroids
from filters.visual import PERCEPTUAL, NoFrames, row_vector, visual_features
from pipelines.clusters import ApplyClusters, ConnectedComponents
from pipelines.common import REJECTED, dead_letter, rejected_output, stage_counter
from schemas.config import Config, SemanticDedupeConfig
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import Sample

STAGE = Stage.SEMANTIC_DEDUPE
SIZE_SCORE = "semantic_dup_cluster_size"
VECS = "vectors"


def caption_like(sample: Sample, caption_prompt: Optional[str]) -> bool:
    """True when the row's user turns hold only media (and the recipe's caption prompt)."""
    for m in sample.messages:
        if m.role != "user":
            continue
        for p in m.content:
            if p.type == "text" and p.text and p.text != caption_prompt:
                return False
    return True


class _Embed(beam.DoFn):
    """Rows -> rows + (node, unit vector). With decontamination's pHash rule on, the pHashes are
    computed in the same decode, except for `skip_tasks` rows, which that rule never judges."""

    def __init__(self, cfg: SemanticDedupeConfig, with_phash: bool, caption_prompt: Optional[str],
                 skip_tasks=()) -> None:
        self.cfg, self.with_phash, self.caption_prompt = cfg, with_phash, caption_prompt
        self.skip_tasks = frozenset(skip_tasks)

    def setup(self) -> None:
        self.skipped = stage_counter(STAGE.value, "not_compared")
        self.undecodable = stage_counter(STAGE.value, "undecodable_media")
        self.embedded = stage_counter(STAGE.value, "embedded")

    def _vector(self, s: Sample):
        """The row's media vector; None when its pictures cannot be decoded."""
        cfg = self.cfg
        try:
            if self.with_phash and s.task not in self.skip_tasks:
                visual_features(s, embedding=cfg.embedding == "perceptual", phash=True)
            vec = row_vector(s, cfg.embedding)      # computes "perceptual" if still missing
        except NoFrames:
            self.undecodable.inc()
            return None
        s.embeddings.pop(PERCEPTUAL, None)          # ~3 KB per item that no later stage reads
        return vec

    def process(self, batch):
        cfg = self.cfg
        for s in batch:
            if cfg.rows == "captions" and not caption_like(s, self.caption_prompt):
                self.skipped.inc()
                yield s
                continue
            vec = dead_letter(STAGE.value, s, lambda s=s: self._vector(s))
            if isinstance(vec, Rejected):
                yield rejected_output(vec)
                continue
            if vec is None:
                self.skipped.inc()
                yield s
                continue
            self.embedded.inc()
            s.scores[SIZE_SCORE] = 1.0
            yield s
            yield TaggedOutput(VECS, (node_key(s.scores.get(cfg.quality_score), s.id), vec))


def _train(sample, total, cfg: SemanticDedupeConfig):
    """The bounded sample -> unit centroids (or None when there is nothing to cluster)."""
    if not sample:
        return None
    x = np.stack([v for _, v in sample])
    k = choose_k(total, len(x), cfg.target_cluster_size)
    stage_counter(STAGE.value, "kmeans_clusters").inc(k)
    stage_counter(STAGE.value, "kmeans_sample").inc(len(x))
    return train_centroids(x, k, niter=cfg.kmeans_iters, seed=cfg.seed)


class _Assign(beam.DoFn):
    def __init__(self, cfg: SemanticDedupeConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        self.spilled = stage_counter(STAGE.value, "spilled_assignments")

    def process(self, batch, centroids):
        if centroids is None or not batch:
            return
        x = np.stack([v for _, v in batch])
        home, extra = assign(x, centroids, self.cfg.spill_margin, self.cfg.max_spill)
        for (node, vec), h, ex in zip(batch, home, extra):
            yield int(h), (node, vec)
            for c in ex:
                self.spilled.inc()
                yield int(c), (node, vec)


def _split_key(kv, sizes, max_size: int):
    cluster, member = kv
    size = sizes.get(cluster, 0)
    parts = -(-size // max_size)
    if parts <= 1:
        return (cluster, 0), member
    return (cluster, zlib.crc32(node_id(member[0]).encode()) % parts), member


class _RangeSearch(beam.DoFn):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def setup(self) -> None:
        self.pairs = stage_counter(STAGE.value, "pairs")
        self.clusters = stage_counter(STAGE.value, "searched_clusters")
        # one per DoFn instance, reused across clusters: faiss GPU resources are not thread-safe
        self.gpu_res = gpu_resources()

    def process(self, element):
        _, members = element
        members = sorted(members, key=lambda m: m[0])   # runner-independent order: same floats, same pairs
        if len(members) < 2:
            return
        self.clusters.inc()
        nodes = [n for n, _ in members]
        x = np.stack([v for _, v in members])
        a, b = range_pairs(x, self.threshold, gpu_res=self.gpu_res)
        self.pairs.inc(len(a))
        yield from star_edges(nodes, zip(a.tolist(), b.tolist()))


class _CountSplits(beam.DoFn):
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size

    def process(self, kv):
        cluster, size = kv
        if size > self.max_size:
            stage_counter(STAGE.value, "split_clusters").inc()
            stage_counter(STAGE.value, "split_cluster_members").inc(size)
        yield kv


class SemanticDedupe(beam.PTransform):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        cfg = self.cfg.dedupe.semantic
        d = self.cfg.decontaminate
        with_phash = d.enabled and bool(d.benchmarks) and d.phash.enabled
        embedded = (samples
                    | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=cfg.batch_size)
                    | "Embed" >> beam.ParDo(_Embed(cfg, with_phash, self.cfg.validate.default_caption_prompt,
                                                   d.phash.skip_tasks))
                    .with_outputs(VECS, REJECTED, main="rows"))
        vecs = embedded[VECS]
        total = vecs | "Count" >> beam.combiners.Count.Globally()
        sample = vecs | "TrainingSample" >> beam.combiners.Top.Smallest(
            cfg.sample_size, key=lambda kv: node_id(kv[0]))
        centroids = sample | "TrainCentroids" >> beam.Map(_train, total=AsSingleton(total), cfg=cfg)
        assigned = (vecs
                    | "BatchVecs" >> beam.BatchElements(min_batch_size=16, max_batch_size=cfg.batch_size)
                    | "Assign" >> beam.ParDo(_Assign(cfg), centroids=AsSingleton(centroids)))
        sizes = (assigned
                 | "ClusterOf" >> beam.Map(lambda kv: kv[0])
                 | "ClusterSizes" >> beam.combiners.Count.PerElement()
                 | "CountSplits" >> beam.ParDo(_CountSplits(cfg.max_cluster_size)))
        edges = (assigned
                 | "SplitGiant" >> beam.Map(_split_key, sizes=AsDict(sizes), max_size=cfg.max_cluster_size)
                 | "GroupClusters" >> beam.GroupByKey()
                 | "RangeSearch" >> beam.ParDo(_RangeSearch(cfg.threshold)))
        assignments = edges | "Components" >> ConnectedComponents(STAGE.value, cfg.cc_max_rounds)
        what = f"near-duplicate media ({cfg.embedding} embedding cosine >= {cfg.threshold})"
        return (embedded["rows"], assignments, embedded[REJECTED]) | "Apply" >> ApplyClusters(
            STAGE, Reason.SEMANTIC_DUPLICATE, SIZE_SCORE, what)
