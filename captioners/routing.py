"""Thresholds and routing for CLIP scores: which rule covers a row, percentiles from histograms.

Percentile thresholds are computed per (source, task) from a fixed-bin histogram of
`clip_score` over [-1, 1]: integer counts merge in any order to the same result, so the
threshold is the same on any runner and any number of workers, and one source's histogram is
`histogram_bins` integers however many rows it has (Beam combines them: pipelines/score.py).
The threshold is interpolated inside the bin holding the percentile, so it is exact to
within one bin (0.0005 with the default 4000 bins).

A row is routed when its clip_score is strictly below the threshold of the first rule that
matches its source and task; `route` gives the rule's action (keep, recaption or drop).
The score stage stores the threshold in `scores["clip_threshold"]`, so the recaption stage and
anyone reading the output can tell routed rows from the stored scores alone.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from schemas.config import ScoreRule
from schemas.sample import Sample

LOW, HIGH = -1.0, 1.0


def match_rule(rules: Sequence[ScoreRule], source: str, task: str) -> Optional[ScoreRule]:
    """The first rule for this task whose source is null or equal to the row's source."""
    for rule in rules:
        if rule.task == task and (rule.source is None or rule.source == source):
            return rule
    return None


def histogram(scores: Sequence[float], bins: int) -> np.ndarray:
    """Counts of scores in `bins` equal bins over [-1, 1] (values outside are clipped in)."""
    counts, _ = np.histogram(np.clip(np.asarray(scores, np.float64), LOW, HIGH), bins=bins, range=(LOW, HIGH))
    return counts.astype(np.int64)


def percentile_threshold(counts: np.ndarray, percentile: float) -> float:
    """The score below which `percentile` % of the histogram's rows lie (linear inside a bin)."""
    total = int(counts.sum())
    bins = len(counts)
    width = (HIGH - LOW) / bins
    if total == 0:
        return LOW
    target = percentile / 100.0 * total
    if target <= 0:
        first = int(np.flatnonzero(counts)[0])
        return LOW + first * width
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, target, side="left"))
    b = min(b, bins - 1)
    before = int(cum[b - 1]) if b > 0 else 0
    inside = (target - before) / counts[b] if counts[b] else 1.0
    return float(LOW + (b + inside) * width)


def resolve_threshold(rule: ScoreRule, counts: Optional[np.ndarray]) -> Optional[float]:
    """The cosine a rule compares with: its value, or its percentile of the row's distribution."""
    if rule.kind == "absolute":
        return float(rule.value)
    if counts is None:
        return None
    return percentile_threshold(counts, rule.value)


def route(sample: Sample, rules: Sequence[ScoreRule]) -> Optional[str]:
    """keep | recaption | drop for a row below its threshold; None if it is not below one."""
    score = sample.scores.get("clip_score")
    threshold = sample.scores.get("clip_threshold")
    if score is None or threshold is None or not score < threshold:
        return None
    rule = match_rule(rules, sample.source, sample.task)
    return rule.below if rule is not None else None
