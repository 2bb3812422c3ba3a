"""Node keys, local components and the distributed connected components (pipelines/clusters.py)."""
import random
from collections import defaultdict

import apache_beam as beam
import pytest

from tests.beam_util import run_collect
from filters.cluster import (UnionFind, components_reference, large_star, node_id, node_key, rank_prefix,
                             small_star, star_edges)
from pipelines.clusters import ConnectedComponents


def test_node_keys_sort_by_score_desc_then_id():
    keys = [node_key(2.0, "b"), node_key(10.0, "z"), node_key(2.0, "a"), node_key(None, "0"),
            node_key(-1.5, "c"), node_key(0.0, "d"), node_key(-0.0, "e"), node_key(float("nan"), "f")]
    assert [node_id(k) for k in sorted(keys)] == ["z", "a", "b", "d", "e", "c", "0", "f"]
    assert len(rank_prefix(1e300)) == 16 and rank_prefix(3.0) < rank_prefix(2.999)


def test_union_find_roots_are_smallest():
    uf = UnionFind(6)
    for a, b in [(5, 3), (3, 4), (1, 2)]:
        uf.union(a, b)
    assert [uf.find(i) for i in range(6)] == [0, 1, 1, 3, 3, 3]


def test_star_edges_keep_connectivity_with_fewest_edges():
    nodes = ["d", "a", "c", "b", "e"]
    edges = list(star_edges(nodes, [(0, 2), (2, 3), (1, 4)]))     # {d, c, b}, {a, e}
    assert sorted(edges) == [("c", "b"), ("d", "b"), ("e", "a")]


def _simulate(edges, rounds):
    """Large-star / small-star in one process, exactly as the Beam stages run them."""
    e = {(max(u, v), min(u, v)) for u, v in edges if u != v}
    for _ in range(rounds):
        nbrs = defaultdict(set)
        for u, v in e:
            nbrs[u].add(v)
            nbrs[v].add(u)
        e = {x for n, vs in nbrs.items() for x in large_star(n, vs)}
        smaller = defaultdict(set)
        for u, v in e:
            smaller[u].add(v)
        e = {x for n, vs in smaller.items() for x in small_star(n, vs)}
    return e


def _names(n, seed):
    """Node keys with random ids and a few distinct scores."""
    rng = random.Random(seed)
    return [node_key(rng.choice([None, 1.0, 2.0]), f"{rng.getrandbits(64):016x}") for _ in range(n)]


def _random_graph(n_nodes, n_edges, seed):
    rng = random.Random(seed)
    names = _names(n_nodes, seed)
    return [(rng.choice(names), rng.choice(names)) for _ in range(n_edges)]


@pytest.mark.parametrize("seed", range(5))
def test_star_steps_converge_to_component_minimum(seed):
    edges = _random_graph(400, 380, seed)               # near the giant-component threshold
    ref = components_reference(edges)
    final = _simulate(edges, 8)
    assert all(ref[u] == v for u, v in final)            # every edge: node -> its component minimum
    assert {u for u, _ in final} == {n for n, m in ref.items() if n != m}


@pytest.mark.parametrize("shape", ["chain", "tree"])
def test_worst_shapes_converge_within_default_rounds(shape, cfg):
    rng = random.Random(1)
    names = _names(5000, 1)
    edges = (list(zip(names, names[1:])) if shape == "chain"      # diameter 4999, random labels
             else [(names[i], names[rng.randrange(i)]) for i in range(1, len(names))])
    ref = components_reference(edges)
    rounds = next(r for r in range(1, 30) if all(ref[u] == v for u, v in _simulate(edges, r)))
    assert rounds <= min(cfg.dedupe.near.cc_max_rounds, cfg.dedupe.semantic.cc_max_rounds), rounds


def _assignments(edges, rounds):
    out = run_collect(edges, lambda pc: {"a": pc | ConnectedComponents("test", rounds)})
    return dict(out["a"]), out["counters"]


def test_beam_components_match_reference():
    edges = _random_graph(300, 260, 7) + [(node_key(1.0, "x"), node_key(1.0, "y"))]
    ref = components_reference(edges)
    got, counters = _assignments(edges, 8)
    sizes = defaultdict(int)
    for m in ref.values():
        sizes[m] += 1
    assert got == {node_id(n): (node_id(m), sizes[m]) for n, m in ref.items()}
    assert counters.get("test/cc_unconverged_nodes", 0) == 0
    assert counters["test/clusters"] == len(sizes)


def test_beam_unconverged_is_counted_and_never_merges_components():
    names = _names(300, 2)
    edges = list(zip(names, names[1:])) + [(node_key(None, "a"), node_key(None, "b"))]
    ref = components_reference(edges)
    got, counters = _assignments(edges, 1)
    assert counters["test/cc_unconverged_nodes"] > 0
    by_id = {node_id(n): node_id(m) for n, m in ref.items()}
    for n, (rep, _) in got.items():
        assert by_id[n] == by_id[rep]                    # a representative from the same component
    assert len({rep for rep, _ in got.values() if by_id[rep] == by_id[node_id(names[0])]}) > 1  # under-merged


def test_beam_components_empty_input():
    got, _ = _assignments([], 3)
    assert got == {}
    with pytest.raises(ValueError):
        ConnectedComponents("x", 0)
    assert beam  # imported for the pipeline
