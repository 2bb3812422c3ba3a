"""Duplicate clusters over Beam: distributed connected components, then one kept row per cluster.

`ConnectedComponents` turns an edge PCollection into (sample id, (representative id, cluster
size)) for every node that has an edge, by alternating Large-Star and Small-Star (filters/
cluster.py) for a fixed number of rounds unrolled into the graph (Beam has no loops; the
DirectRunner none at all). Each round is one GroupByKey keyed by node: a worker holds one
node's neighbourhood, never the graph. Node keys sort by descending quality then id, so the
component minimum *is* the representative.

Convergence: at a fixed point every edge joins a node to its component minimum. The last step
checks that (a node is both a leaf and a centre, or a leaf of two centres) and counts such
nodes in `<stage>/cc_unconverged_nodes`. The policy when it is non-zero: nothing is wrongly
removed, because every edge still joins two members of one true component; a component may
keep more than one row (duplicates survive) and `dup_of` may point to a row that is itself a
duplicate. Raise the stage's `cc_max_rounds` if the counter is ever non-zero; duplicate
clusters are small and shallow, so a few rounds converge (tests/test_clusters.py measures
chains and stars).

`ApplyClusters` joins the assignments back to the rows by id (CoGroupByKey): the
representative is kept, every other member goes to rejected/ with `dup_of`. Only rows the
stage compared (they carry its cluster-size score) can have an assignment, so only they take
the shuffle; the others skip it and meet the joined rows in `Decide`, which keeps them (one
step counts `<stage>/kept`, as before). The joined rows carry references to their media, not
the media (the blob store, pipelines/blobstore.py), so the join moves about a row's metadata.
"""
from __future__ import annotations

import apache_beam as beam

from filters.base import reject_sample
from filters.cluster import large_star, node_id, small_star
from pipelines.common import KEPT, REJECTED, count_kept, rejected_output, stage_counter
from schemas.reasons import Reason, Stage


def _both_directions(edge):
    u, v = edge
    yield u, v
    yield v, u


def _orient(edge):
    """(larger, smaller); self-loops dropped."""
    u, v = edge
    if u > v:
        yield u, v
    elif v > u:
        yield v, u


class _Assign(beam.DoFn):
    """At one node of the final star graph: the node's parents (smaller nodes it points to)
    and children (larger nodes pointing to it) -> assignments for itself and its children."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.unconverged = stage_counter(stage, "cc_unconverged_nodes")
        self.clusters = stage_counter(stage, "clusters")
        self.members = stage_counter(stage, "cluster_members")

    def process(self, element):
        node, roles = element
        parents, children = set(), set()
        for role, other in roles:
            (parents if role == "p" else children).add(other)
        if len(parents) > 1 or (parents and children):
            self.unconverged.inc()
        if not children:
            return
        size = len(children) + 1
        rep = node_id(node)
        if not parents:
            self.clusters.inc()
            self.members.inc(size)
            yield rep, (rep, size)
        for c in children:
            yield node_id(c), (rep, size)


class ConnectedComponents(beam.PTransform):
    """Edges (node, node) -> (id, (representative id, cluster size)) for every node in an edge."""

    def __init__(self, stage: str, max_rounds: int) -> None:
        super().__init__()
        if max_rounds < 1:
            raise ValueError("cc_max_rounds must be at least 1")
        self.stage, self.max_rounds = stage, max_rounds

    def expand(self, edges):
        stage = self.stage
        e = edges | "Orient" >> beam.FlatMap(_orient)
        for i in range(self.max_rounds):
            e = (e
                 | f"LargeStar{i}/Both" >> beam.FlatMap(_both_directions)
                 | f"LargeStar{i}/ByNode" >> beam.GroupByKey()
                 | f"LargeStar{i}/Step" >> beam.FlatMap(lambda kv: large_star(kv[0], kv[1])))
            e = (e
                 | f"SmallStar{i}/ByLarger" >> beam.GroupByKey()
                 | f"SmallStar{i}/Step" >> beam.FlatMap(lambda kv: small_star(kv[0], kv[1])))
        return (e
                | "Roles" >> beam.FlatMap(lambda uv: [(uv[0], ("p", uv[1])), (uv[1], ("c", uv[0]))])
                | "ByNodeFinal" >> beam.GroupByKey()
                | "Assign" >> beam.ParDo(_Assign(stage)))


class _Decide(beam.DoFn):
    def __init__(self, stage: Stage, reason: Reason, size_score: str, what: str) -> None:
        self.stage, self.reason, self.size_score, self.what = stage, reason, size_score, what

    def process(self, element):
        sid, grouped = element
        assignments = list(grouped["assign"])
        rep, size = min(assignments) if assignments else (sid, 1)
        for s in grouped["row"]:
            if self.size_score in s.scores:      # the row was compared: record its cluster size
                s.scores[self.size_score] = float(size)
            if rep != sid:
                r = reject_sample(s, self.stage, self.reason, f"{self.what} in a cluster of {size}; kept {rep}",
                                  dup_of=rep)
                yield rejected_output(r)
            else:
                count_kept(self.stage.value)
                yield s


def _compared(sample, n: int, size_score: str) -> int:
    """Partition 1: rows that carry the stage's size score, the only ones an assignment can
    name (a row read back from Parquet may carry it uncompared: it still joins, as before)."""
    return int(size_score in sample.scores)


def _unjoined(sample):
    """An uncompared row shaped like a join result without assignments."""
    return sample.id, {"row": [sample], "assign": []}


class ApplyClusters(beam.PTransform):
    """(rows, assignments, the stage's earlier rejects) -> {KEPT, REJECTED}: every
    non-representative is rejected with dup_of, detail "<what> in a cluster of N; kept ID"."""

    def __init__(self, stage: Stage, reason: Reason, size_score: str, what: str) -> None:
        super().__init__()
        self.stage, self.reason, self.size_score, self.what = stage, reason, size_score, what

    def expand(self, pcolls):
        rows, assignments, rejected = pcolls
        uncompared, compared = rows | "SplitCompared" >> beam.Partition(_compared, 2, self.size_score)
        keyed = compared | "KeyById" >> beam.Map(lambda s: (s.id, s))
        joined = {"row": keyed, "assign": assignments} | "JoinById" >> beam.CoGroupByKey()
        out = ((joined, uncompared | "Unjoined" >> beam.Map(_unjoined))
               | "WithUncompared" >> beam.Flatten()
               | "Decide" >> beam.ParDo(_Decide(self.stage, self.reason, self.size_score, self.what))
               .with_outputs(REJECTED, main=KEPT))
        return {KEPT: out[KEPT], REJECTED: (out[REJECTED], rejected) | "AllRejected" >> beam.Flatten()}
