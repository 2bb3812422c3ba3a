"""Path selection as Keye-VL does it (keye.md 4.3): keep the most commonly traversed correct path.

    correct paths ─split─▶ steps ─group─▶ step groups ─count─▶ support of each group
                                                       (how many correct paths hold it)
    path score = mean over the path's scored steps of support / number of correct paths

Steps are sentences (or lines); two steps are equivalent when their normalised text is equal
(case, punctuation, numbers kept) or, given an `embed` function, when their embeddings' cosine
reaches `similarity` (greedy grouping in path order, so the result is deterministic). Steps
shorter than `min_step_chars` (connectives) are not scored. The best path has the highest
score; ties go to the shorter path, then the lower index. All of one item's paths are in memory
at once: that is N texts, never the corpus.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_NON_WORD = re.compile(r"[^\w%.]+")

Embed = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Choice:
    index: int                  # into the paths given
    score: float                # in [0, 1]
    scores: tuple[float, ...]   # every path's score


def split_steps(path: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(path.strip()) if s.strip()]


def step_key(step: str) -> str:
    return " ".join(_NON_WORD.sub(" ", step.lower()).replace(". ", " ").strip(" .").split())


def step_groups(paths: Sequence[list[str]], embed: Optional[Embed] = None, similarity: float = 0.9) -> list[list[int]]:
    """For each path, the group id of each of its steps."""
    if embed is None:
        ids: dict[str, int] = {}
        return [[ids.setdefault(step_key(s), len(ids)) for s in steps] for steps in paths]
    flat = [s for steps in paths for s in steps]
    if not flat:
        return [[] for _ in paths]
    vecs = np.asarray(embed(flat), dtype=np.float64)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    heads: list[int] = []       # index into flat of each group's first step
    group_of: list[int] = []
    for i in range(len(flat)):
        sims = vecs[heads] @ vecs[i] if heads else np.empty(0)
        best = int(np.argmax(sims)) if len(sims) else -1
        if best >= 0 and sims[best] >= similarity:
            group_of.append(best)
        else:
            heads.append(i)
            group_of.append(len(heads) - 1)
    out, k = [], 0
    for steps in paths:
        out.append(group_of[k:k + len(steps)])
        k += len(steps)
    return out


def path_scores(paths: Sequence[str], min_step_chars: int = 12, embed: Optional[Embed] = None,
                similarity: float = 0.9) -> list[float]:
    """Each path's representativeness among `paths` (all of them correct)."""
    steps = [[s for s in split_steps(p) if len(s) >= min_step_chars] for p in paths]
    groups = step_groups(steps, embed, similarity)
    support: dict[int, int] = {}
    for g in groups:
        for gid in set(g):
            support[gid] = support.get(gid, 0) + 1
    n = len(paths)
    return [float(np.mean([support[gid] / n for gid in g])) if g else 0.0 for g in groups]


def select_path(paths: Sequence[str], min_step_chars: int = 12, embed: Optional[Embed] = None,
                similarity: float = 0.9) -> Choice:
    if not paths:
        raise ValueError("no paths to select from")
    scores = path_scores(paths, min_step_chars, embed, similarity)
    best = min(range(len(paths)), key=lambda i: (-round(scores[i], 12), len(paths[i]), i))
    return Choice(best, scores[best], tuple(scores))
