"""Text near-duplicate removal: MinHash -> LSH buckets -> verified pairs -> connected components.

    rows --Sign (batched, vectorised)--> (node, signature, scope)
         --Band--> ((band, band hash, scope), node)    one element per band, ids only
         --GroupByKey--> buckets of 2+ --> (node, bucket)
         + (node, b-bit signature) --CoGroupByKey on node--> (bucket, (node, signature))
         --GroupByKey--> bucket --Verify--> star edges between verified members
         --ConnectedComponents (pipelines/clusters.py)--> (id, (representative, size))
    rows + assignments --CoGroupByKey on id--> kept / rejected near_duplicate with dup_of

What each worker holds: Sign holds one batch of rows; Verify holds one bucket, at most
`max_bucket_size` signatures (a larger bucket is streamed twice against one pivot: O(1) memory,
counted in near_dedupe/giant_buckets); the components hold one node's neighbourhood per key;
the final join holds one id's row. No step sees all signatures or all pairs. Buckets are
first formed from node keys alone; each row's signature then joins, once, the buckets of two or
more it sits in (not once per band: 20x fewer signature bytes shuffled), so candidates are
verified where they meet, without joining rows back. Only the signatures' lowest 8 bits travel
(b-bit MinHash, 128 bytes at 128 permutations, corrected for chance agreement: `verify_bits`);
with `verify: false` only node keys travel, in one shuffle (NeMo Curator's choice: every bucket
is a cluster).

The text compared is every text of the row (captions, questions, answers, reasoning, ASR
turns), in order. With `scope: same_media` (the default) the bucket key also holds a hash of
the row's media bytes (their SHA-256s, in order), so a row is only compared with rows showing
the same media, and text-only rows with text-only rows: two captions of different pictures
that a template made alike are not duplicates (media near-duplicates are semantic dedupe's
job). `scope: text` lets the text alone decide. The representative of a cluster is the row with the highest
`quality_score` (default `text_chars`: the most complete text), then the smallest id; it is
encoded in the node key, so the component minimum is the representative.
"""
from __future__ import annotations

import hashlib
import itertools

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import TaggedOutput

from filters.cluster import node_key, star_edges
from filters.minhash import (WORD_RE, MinHasher, band_hashes, bbit_correct, bits_dtype, low_bits, optimal_bands,
                             pairwise_estimates, shingles)
from pipelines.clusters import ApplyClusters, ConnectedComponents
from pipelines.common import REJECTED, dead_letter, rejected_output, stage_counter
from schemas.config import Config, NearDedupeConfig
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import Sample

STAGE = Stage.NEAR_DEDUPE
SIZE_SCORE = "near_dup_cluster_size"
SIGS = "signatures"


def dedupe_text(sample: Sample) -> str:
    return "\n".join(sample.texts())


def scope_key(sample: Sample, cfg: NearDedupeConfig) -> bytes:
    """b"" for text-only rows or scope "text"; else 8 bytes naming the row's media bytes."""
    if cfg.scope == "text" or not sample.media:
        return b""
    h = hashlib.sha1()
    for item in sample.media:
        h.update((item.sha256 or item.uri).encode() + b"\x1f")
    return h.digest()[:8]


def eligible(sample: Sample, cfg: NearDedupeConfig) -> bool:
    if cfg.tasks and sample.task not in cfg.tasks:
        return False
    return sum(1 for _ in WORD_RE.finditer(dedupe_text(sample))) >= max(cfg.min_words, 1)


class _Sign(beam.DoFn):
    """A batch of rows -> the rows (compared ones marked) + (node, signature bytes, scope) per
    compared row."""

    def __init__(self, cfg: NearDedupeConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        self.hasher = MinHasher(self.cfg.num_perm, self.cfg.seed)
        self.skipped = stage_counter(STAGE.value, "not_compared")
        self.signed = stage_counter(STAGE.value, "signatures")

    def process(self, batch):
        cfg = self.cfg
        todo, docs = [], []
        for s in batch:
            sh = dead_letter(STAGE.value, s, lambda s=s: eligible(s, cfg) and shingles(
                dedupe_text(s), cfg.shingle, cfg.ngram, cfg.lowercase))
            if isinstance(sh, Rejected):
                yield rejected_output(sh)
                continue
            if sh:
                todo.append((s, scope_key(s, cfg)))
                docs.append(sh)
                continue
            self.skipped.inc()
            yield s
        if not todo:
            return
        sigs = self.hasher.signatures(docs)
        self.signed.inc(len(todo))
        for (s, scope), sig in zip(todo, sigs):
            s.scores[SIZE_SCORE] = 1.0
            yield s
            yield TaggedOutput(SIGS, (node_key(s.scores.get(cfg.quality_score), s.id), sig.tobytes(), scope))


def _bands(cfg: NearDedupeConfig, with_signatures: bool):
    """A batch of (node, signature, scope) -> (bucket key, value) per band; the value is (node,
    b-bit signature) or, for the id-only first pass, the node alone."""
    b, r = optimal_bands(cfg.threshold, cfg.num_perm, cfg.false_positive_weight, cfg.false_negative_weight)
    verify, bits = cfg.verify, cfg.verify_bits

    def explode(batch):
        sigs = np.frombuffer(b"".join(s for _, s, _ in batch), dtype=np.uint32).reshape(len(batch), -1)
        keys = band_hashes(sigs, b, r)
        short = low_bits(sigs, bits) if verify and with_signatures else None
        for i, (node, _, scope) in enumerate(batch):
            value = (node, short[i].tobytes() if short is not None else b"") if with_signatures else node
            for band in range(b):
                yield band.to_bytes(2, "big") + int(keys[i, band]).to_bytes(8, "big") + scope, value

    return explode


def _short_signatures(cfg: NearDedupeConfig):
    """A batch of (node, signature, scope) -> (node, b-bit signature): each row's once."""
    def short(batch):
        sigs = np.frombuffer(b"".join(s for _, s, _ in batch), dtype=np.uint32).reshape(len(batch), -1)
        for (node, _, _), sig in zip(batch, low_bits(sigs, cfg.verify_bits)):
            yield node, sig.tobytes()
    return short


def _shared_buckets(element):
    """(bucket key, nodes) -> (node, bucket key) for every member of a bucket of two or more (a node
    sits in a bucket once: band index is in the key). Streams: a giant bucket is never held."""
    bucket, nodes = element
    it = iter(nodes)
    head = list(itertools.islice(it, 2))
    if len(head) < 2:
        return
    for node in itertools.chain(head, it):
        yield node, bucket


def _to_buckets(element):
    """(node, {signature, buckets}) -> (bucket key, (node, signature)) per bucket it shares."""
    node, grouped = element
    sigs = list(grouped["signature"])
    if not sigs:
        return
    for bucket in grouped["bucket"]:
        yield bucket, (node, sigs[0])


class _Verify(beam.DoFn):
    """One LSH bucket -> star edges of its verified components (see module docstring)."""

    def __init__(self, cfg: NearDedupeConfig) -> None:
        self.threshold, self.cap, self.verify = cfg.threshold, cfg.max_bucket_size, cfg.verify
        self.bits, self.dtype = cfg.verify_bits, bits_dtype(cfg.verify_bits)

    def setup(self) -> None:
        self.buckets = stage_counter(STAGE.value, "candidate_buckets")
        self.giant = stage_counter(STAGE.value, "giant_buckets")
        self.giant_members = stage_counter(STAGE.value, "giant_bucket_members")
        self.pairs = stage_counter(STAGE.value, "verified_pairs")
        self.rejected_pairs = stage_counter(STAGE.value, "rejected_candidate_pairs")

    def process(self, element):
        _, members = element
        head = list(itertools.islice(iter(members), self.cap + 1))
        if len(head) < 2:
            return
        self.buckets.inc()
        if len(head) > self.cap:
            yield from self._pivot(members)
            return
        uniq = dict(head)   # a node once, even if its bands collided twice
        nodes = list(uniq)
        if len(nodes) < 2:
            return
        if not self.verify:
            yield from star_edges(nodes, ((0, j) for j in range(1, len(nodes))))
            return
        sigs = np.frombuffer(b"".join(uniq[n] for n in nodes), dtype=self.dtype).reshape(len(nodes), -1)
        est = pairwise_estimates(sigs, bits=self.bits)
        iu, ju = np.triu_indices(len(nodes), 1)
        ok = est[iu, ju] >= self.threshold
        self.pairs.inc(int(ok.sum()))
        self.rejected_pairs.inc(int((~ok).sum()))
        yield from star_edges(nodes, zip(iu[ok].tolist(), ju[ok].tolist()))

    def _pivot(self, members):
        """Giant bucket: stream once for the smallest node, once more to link each member
        that matches it; memory O(1), time O(bucket), result independent of arrival order."""
        pivot, pivot_sig, n = None, None, 0
        for node, sig in members:
            n += 1
            if pivot is None or node < pivot:
                pivot, pivot_sig = node, sig
        self.giant.inc()
        self.giant_members.inc(n)
        ref = np.frombuffer(pivot_sig, dtype=self.dtype) if self.verify else None
        for node, sig in members:
            if node == pivot:
                continue
            if self.verify:
                share = np.count_nonzero(np.frombuffer(sig, dtype=self.dtype) == ref) / len(ref)
                if float(bbit_correct(share, self.bits)) < self.threshold:
                    continue
            self.pairs.inc()
            yield node, pivot


class CandidateEdges(beam.PTransform):
    """(node, signature bytes, scope bytes) -> verified edges (node, node): LSH banding (within
    one scope) + per-bucket checks."""

    def __init__(self, cfg: NearDedupeConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, sigs):
        cfg = self.cfg
        batched = sigs | "BatchSigs" >> beam.BatchElements(min_batch_size=64, max_batch_size=cfg.batch_size)
        if not cfg.verify:    # node keys alone travel: one shuffle
            buckets = batched | "Bands" >> beam.FlatMap(_bands(cfg, with_signatures=True))
        else:
            # Node keys are grouped by band first; each row's signature then travels once, to the
            # buckets of two or more it shares, instead of once per band (20x) to every bucket.
            shared = (batched
                      | "BandIds" >> beam.FlatMap(_bands(cfg, with_signatures=False))
                      | "GroupIds" >> beam.GroupByKey()
                      | "SharedBuckets" >> beam.FlatMap(_shared_buckets))
            short = batched | "ShortSigs" >> beam.FlatMap(_short_signatures(cfg))
            buckets = ({"signature": short, "bucket": shared}
                       | "SigsToBuckets" >> beam.CoGroupByKey()
                       | "ToBuckets" >> beam.FlatMap(_to_buckets))
        return (buckets
                | "GroupBuckets" >> beam.GroupByKey()
                | "Verify" >> beam.ParDo(_Verify(cfg)))


class NearDedupe(beam.PTransform):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        cfg = self.cfg.dedupe.near
        signed = (samples
                  | "Batch" >> beam.BatchElements(min_batch_size=16, max_batch_size=cfg.batch_size)
                  | "Sign" >> beam.ParDo(_Sign(cfg)).with_outputs(SIGS, REJECTED, main="rows"))
        assignments = (signed[SIGS]
                       | "Edges" >> CandidateEdges(cfg)
                       | "Components" >> ConnectedComponents(STAGE.value, cfg.cc_max_rounds))
        what = f"near-duplicate text ({cfg.shingle} {cfg.ngram}-gram MinHash Jaccard >= {cfg.threshold})"
        return (signed["rows"], assignments, signed[REJECTED]) | "Apply" >> ApplyClusters(
            STAGE, Reason.NEAR_DUPLICATE, SIZE_SCORE, what)
