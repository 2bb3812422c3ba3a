"""Duplicate clusters without Beam: node keys that sort by quality, local union-find, and the
two steps of the large-star / small-star connected-components algorithm.

Node keys. A duplicate graph's nodes are strings `RANK + id`, where RANK is 16 hex digits that
sort ascending by *descending* quality score. So the smallest node of a component is its
representative: the highest score, then the smallest id. Connected components that converge
to the component minimum therefore pick the representative for free, and every later step
compares plain strings.

Connected components. Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC
2014): alternate Large-Star and Small-Star until no edge changes; each step is one shuffle
keyed by node, and each node only sees its own neighbours, so no worker ever holds the graph.
At convergence every edge joins a node to its component minimum. `pipelines/clusters.py` runs
the steps as Beam transforms; the functions here are what each key's reducer does.
"""
from __future__ import annotations

import math
import struct
from typing import Iterable, Iterator, Optional, Sequence

ID_OFFSET = 16  # node key = 16 hex digits of rank, then the sample id


def rank_prefix(score: Optional[float]) -> str:
    """16 hex digits whose string order is descending order of score (None / NaN last)."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        x = math.inf
    else:
        x = -float(score)
        if x == 0.0:
            x = 0.0  # -0.0 and 0.0 rank equal
    bits = struct.unpack(">Q", struct.pack(">d", x))[0]
    bits = (bits ^ 0xFFFFFFFFFFFFFFFF) if bits >> 63 else (bits | (1 << 63))
    return f"{bits:016x}"


def node_key(score: Optional[float], sample_id: str) -> str:
    return rank_prefix(score) + sample_id


def node_id(node: str) -> str:
    return node[ID_OFFSET:]


class UnionFind:
    """Union-find over 0..n-1 whose roots are always the smallest index of their set."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            if ri < rj:
                self.parent[rj] = ri
            else:
                self.parent[ri] = rj


def star_edges(nodes: Sequence[str], pairs: Iterable[tuple[int, int]]) -> Iterator[tuple[str, str]]:
    """Connected components of `pairs` (indices into nodes) as star edges (member, minimum):
    the fewest edges that keep the same connectivity, so the global shuffle sees less."""
    order = sorted(range(len(nodes)), key=nodes.__getitem__)
    pos = {i: p for p, i in enumerate(order)}
    uf = UnionFind(len(nodes))
    for i, j in pairs:
        uf.union(pos[i], pos[j])
    for p, i in enumerate(order):
        root = uf.find(p)
        if root != p:
            yield nodes[i], nodes[order[root]]


def large_star(node: str, neighbours: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Large-Star at one node: every *larger* neighbour is re-linked to the smallest node of
    the neighbourhood (itself included). Input: all neighbours of the node, both directions."""
    nbrs = set(neighbours)
    nbrs.discard(node)
    if not nbrs:
        return
    m = min(min(nbrs), node)
    for v in nbrs:
        if v > node:
            yield v, m


def small_star(node: str, smaller: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Small-Star at one node: the node and its *smaller* neighbours are all linked to the
    smallest of them. Input: the neighbours smaller than the node."""
    nbrs = set(smaller)
    nbrs.discard(node)
    if not nbrs:
        return
    m = min(nbrs)
    for v in nbrs | {node}:
        if v != m:
            yield v, m


def components_reference(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Every node -> smallest node of its component, in one process: the test oracle."""
    edges = list(edges)
    nodes = sorted({x for e in edges for x in e})
    index = {n: i for i, n in enumerate(nodes)}
    uf = UnionFind(len(nodes))
    for u, v in edges:
        uf.union(index[u], index[v])
    return {n: nodes[uf.find(i)] for n, i in index.items()}
