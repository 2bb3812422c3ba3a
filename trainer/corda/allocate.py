"""Rank allocation under a trainable-parameter budget: a rank-r adapter on a d_out × d_in layer trains
r·(d_in + d_out) parameters, and the sum over layers never exceeds the budget.

- `fixed`: every layer gets the same rank (static CorDA, PiSSA, MiLoRA, LoRA).
- `greedy` (CorDA++'s dynamic allocation): every layer starts at `min_rank`; the next component is the
  one with the highest metric benefit per parameter over all layers (`metric.component_values`:
  task energy gained for IPM, knowledge energy exposed for KPM), while it fits the budget.
- `global_rank` (EVA-style): the same pool ranked by benefit alone, cost ignored in the order (EVA
  ranks explained-variance ratios globally), taken while the budget allows.
Both are exact greedy merges of per-layer non-increasing lists (a heap of each layer's next item),
deterministic (ties break by layer name), O(total components · log layers).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Mapping, Optional


@dataclass(frozen=True)
class LayerSlot:
    d_in: int
    d_out: int
    values: tuple[float, ...]           # benefit of component 1, 2, ... (non-increasing)

    @property
    def cost(self) -> int:
        return self.d_in + self.d_out

    @property
    def k(self) -> int:
        return len(self.values)


def parameters(ranks: Mapping[str, int], slots: Mapping[str, LayerSlot]) -> int:
    return sum(r * slots[n].cost for n, r in ranks.items())


def uniform_budget(slots: Mapping[str, LayerSlot], rank: int) -> int:
    """The parameter count of rank `rank` on every layer (LoRA's), the default budget."""
    return sum(min(rank, s.k) * s.cost for s in slots.values())


def fixed(slots: Mapping[str, LayerSlot], rank: int, **_) -> dict[str, int]:
    return {n: min(rank, s.k) for n, s in slots.items()}


def _merge(slots: Mapping[str, LayerSlot], budget: int, min_rank: int, max_rank: Optional[int],
           key: Callable[[float, LayerSlot], float]) -> dict[str, int]:
    ranks = {n: min(min_rank, s.k) for n, s in slots.items()}
    used = parameters(ranks, slots)
    if used > budget:
        raise ValueError(f"min_rank {min_rank} on every layer needs {used} parameters, over the budget {budget}")
    heap = []
    for n, s in slots.items():
        cap = s.k if max_rank is None else min(s.k, max_rank)
        if ranks[n] < cap:
            heap.append((-key(s.values[ranks[n]], s), n, cap))
    heapq.heapify(heap)
    while heap:
        _, n, cap = heapq.heappop(heap)
        s = slots[n]
        if used + s.cost > budget:
            continue                    # this layer no longer fits; cheaper layers still may
        ranks[n] += 1
        used += s.cost
        if ranks[n] < cap:
            heapq.heappush(heap, (-key(s.values[ranks[n]], s), n, cap))
    return ranks


def greedy(slots: Mapping[str, LayerSlot], budget: int, min_rank: int = 1,
           max_rank: Optional[int] = None) -> dict[str, int]:
    """Benefit per parameter: the most metric per trainable parameter first."""
    return _merge(slots, budget, min_rank, max_rank, lambda v, s: v / s.cost)


def global_rank(slots: Mapping[str, LayerSlot], budget: int, min_rank: int = 0,
                max_rank: Optional[int] = None) -> dict[str, int]:
    """EVA-style: components ranked globally by benefit, then taken while the budget allows."""
    return _merge(slots, budget, min_rank, max_rank, lambda v, s: v)


ALLOCATORS = {"greedy": greedy, "global_rank": global_rank}
