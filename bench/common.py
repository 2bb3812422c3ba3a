"""What every benchmark shares: timing, peak memory, machine facts, and one JSON report.

These machines are noisy, so a benchmark reports ratios against a baseline or peer measured
in the same run (and the best of a few repeats), never a bare number to compare across runs.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from typing import Any, Callable


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """(best wall seconds, last result) over `repeat` calls."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


def emit(bench: str, results: dict[str, Any]) -> dict[str, Any]:
    report = {"bench": bench, "machine": machine(), **results}
    json.dump(report, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return report


_COLLECTED: dict[str, list] = {}


class Collect:
    """`beam.Map(Collect(key))` gathers a PCollection into this process (in-process runners only).

    Lives in an importable module: defined in `__main__`, cloudpickle would copy the store."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, x) -> None:
        _COLLECTED.setdefault(self.key, []).append(x)


def collected(key: str) -> list:
    return _COLLECTED.pop(key, [])
